"""`EventProducer(failures_only=True)` (the worker's producer) against the real Kafka: records
acknowledged are counted once a flush leaves none pending, a record the broker refuses is still
reported as a failure, and the records are on the topic."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer

from streams.metrics import REGISTRY
from streams.producer import EventProducer
from streams.settings import Settings
from streams.topics import GRAPH_EDGES
from tests.integration.kafka_fixtures import kafka_settings

pytestmark = pytest.mark.integration
__all__ = ["kafka_settings"]


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_acknowledged_records_are_counted_at_the_flush_and_reach_the_topic(kafka_settings: Settings) -> None:
    topic = kafka_settings.topic(GRAPH_EDGES.name)
    latency_before = _sample("pinstream_delivery_seconds_count", {"topic": topic})
    producer = EventProducer(kafka_settings, failures_only=True)
    for index in range(500):
        producer.send_raw(topic, b"key-%d" % (index % 7), b"value-%d" % index)
    assert producer.delivered == 0  # nothing settled before the flush
    assert producer.flush(30) == 0
    assert (producer.delivered, producer.failed) == (500, 0)
    assert _sample("pinstream_produced_total", {"topic": topic}) == 500
    # No report per record, so no per-record latency either.
    assert _sample("pinstream_delivery_seconds_count", {"topic": topic}) == latency_before
    producer.send_raw(topic, b"key", b"one more")
    producer.close()
    assert producer.delivered == 501

    consumer = Consumer(kafka_settings.kafka_consumer(f"g-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])
    values = []
    try:
        while len(values) < 501:
            messages = consumer.consume(1000, timeout=10)
            assert messages, f"only {len(values)} of 501 records read back"
            values += [m.value() for m in messages if m.error() is None]
    finally:
        consumer.close()
    assert sorted(values) == sorted([b"value-%d" % i for i in range(500)] + [b"one more"])


def test_a_record_the_broker_refuses_is_a_failure_and_not_counted(kafka_settings: Settings) -> None:
    good = kafka_settings.topic(GRAPH_EDGES.name)
    missing = kafka_settings.topic("no.such.topic")  # the stack does not create topics on demand
    producer = EventProducer(kafka_settings, failures_only=True, **{"message.timeout.ms": 3000})
    producer.send_raw(good, b"k", b"lands")
    producer.send_raw(missing, b"k", b"refused", context="line 2")
    assert producer.flush(30) == 0
    assert (producer.delivered, producer.failed) == (1, 1)
    [failure] = producer.recent_failures
    assert failure.topic == missing and failure.context == "line 2" and failure.error
    assert _sample("pinstream_produced_total", {"topic": missing}) == 0
    producer.close()
