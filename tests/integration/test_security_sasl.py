"""SASL against the local broker's SASL listener, for the clients the SDK round trip does not
cover: the admin client (topics, groups) and the faust worker's Kafka client (aiokafka, given
the credentials the worker builds from the settings). A wrong password is refused by each."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError as AIOKafkaError  # type: ignore[import-untyped]
from confluent_kafka import KafkaException
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.admin import apply_topics
from streams.app import broker_credentials
from streams.groups import list_groups
from streams.settings import Settings, load_settings
from streams.stack import kafka as stack_kafka
from streams.topics import CATALOGUE, PINS_INTERACTIONS

pytestmark = pytest.mark.integration


def _sasl(password: str = stack_kafka.SASL_PASSWORD) -> Settings:
    return load_settings(bootstrap_servers=stack_kafka.SASL_BOOTSTRAP,
                         topic_prefix=f"t{uuid.uuid4().hex[:10]}.", security_protocol="SASL_PLAINTEXT",
                         sasl_mechanism="PLAIN", sasl_username=stack_kafka.SASL_USERNAME,
                         sasl_password=password, metrics_port=0)


def test_the_admin_client_authenticates_with_the_settings() -> None:
    settings = _sasl()
    apply_topics(settings)  # creates the whole catalogue over SASL
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_common())
    try:
        names = set(admin.list_topics(timeout=10).topics)
        assert {settings.topic(spec.name) for spec in CATALOGUE} <= names
        assert isinstance(list_groups(settings), list)
    finally:
        for future in admin.delete_topics([settings.topic(s.name) for s in CATALOGUE]).values():
            future.result(timeout=30)
    refused = AdminClient(_sasl("not-the-password").kafka_common())
    with pytest.raises(KafkaException):  # authentication refused: no metadata
        refused.list_topics(timeout=5)


async def _produce(settings: Settings, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=8000,
                                **credentials_to_aiokafka_auth(broker_credentials(settings)))
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"v", key=b"k")
    finally:
        await producer.stop()


def test_the_faust_workers_kafka_client_authenticates_with_the_settings() -> None:
    settings = _sasl()
    apply_topics(settings)
    topic = settings.topic(PINS_INTERACTIONS.name)
    try:
        asyncio.run(_produce(settings, topic))
        with pytest.raises(AIOKafkaError):
            asyncio.run(_produce(_sasl("not-the-password").model_copy(
                update={"topic_prefix": settings.topic_prefix}), topic))
    finally:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(settings.kafka_common())
        for future in admin.delete_topics([settings.topic(s.name) for s in CATALOGUE]).values():
            future.result(timeout=30)
