"""Fixtures for integration tests against the real local Kafka: one uuid topic prefix per test,
the whole catalogue created under it, and deleted on teardown."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from streams.admin import apply_topics
from streams.settings import Settings, load_settings
from streams.topics import CATALOGUE


def make_settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        "bootstrap_servers": os.environ.get("PINSTREAM_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        "metrics_port": 0,
    }
    return load_settings(**(base | overrides))


@pytest.fixture
def kafka_settings() -> Iterator[Settings]:
    """Settings whose catalogue topics are fresh and private to this test."""
    settings = make_settings(topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    apply_topics(settings)
    yield settings
    admin = AdminClient(settings.kafka_common())
    futures = admin.delete_topics([settings.topic(s.name) for s in CATALOGUE], operation_timeout=30)
    for future in futures.values():
        future.result(timeout=30)
