"""Producer SDK -> real Kafka -> consumer SDK: events, keys, commits and dead letters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.consumer import EventConsumer
from streams.errors import PinstreamError, RateLimitedError
from streams.events import InteractionAction, PinCreated, PinInteraction
from streams.producer import DeliveryReport, EventProducer, PinProducer
from streams.ratelimit import RateLimiter
from streams.settings import Settings
from streams.topics import (
    DEADLETTER,
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE,
    PINS_CREATED,
    PINS_INTERACTIONS,
)
from tests.integration.kafka_fixtures import kafka_settings

pytestmark = pytest.mark.integration
__all__ = ["kafka_settings"]


def _interactions(n: int) -> list[dict[str, object]]:
    actions = list(InteractionAction)[1:]
    return [
        {"user_id": f"u{i % 7}", "pin_id": f"p{i}", "action": actions[i % len(actions)],
         "session_id": f"s{i % 3}", "board_id": "b1" if actions[i % len(actions)] == "SAVE" else None,
         "event_time": datetime(2026, 11, 20, 10, 0, i % 60, tzinfo=UTC)}
        for i in range(n)
    ]


def test_interactions_round_trip_as_equal_typed_events_keyed_by_user(kafka_settings: Settings) -> None:
    reports: list[DeliveryReport] = []
    with PinProducer(kafka_settings, on_delivery=reports.append) as producer:
        sent = [producer.interact(**kw) for kw in _interactions(50)]  # type: ignore[arg-type]
    assert len(reports) == 50 and all(r.ok for r in reports)
    by_user_partition = {}
    for r in reports:
        by_user_partition.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_user_partition.values()), "a user spans partitions"

    with EventConsumer(kafka_settings, [kafka_settings.topic(PINS_INTERACTIONS.name)],
                       group_id=f"g-{uuid.uuid4()}") as consumer:
        received = list(consumer.iter(max_records=50, idle_timeout=20))
    assert sorted(r.value.event_id for r in received) == sorted(e.event_id for e in sent)
    by_id = {e.event_id: e for e in sent}
    for record in received:
        assert isinstance(record.value, PinInteraction)
        assert record.value == by_id[record.value.event_id]
        assert record.key == record.value.user_id.encode()


def test_pin_with_inline_image_round_trips_keyed_by_pin(kafka_settings: Settings) -> None:
    image = bytes(range(256)) * 40
    with PinProducer(kafka_settings) as producer:
        sent = producer.create_pin(pin_id="p42", user_id="u1", board_id="b1", title="Lamp",
                                   description="brass", image_bytes=image, tags=("home", "light"))
    with EventConsumer(kafka_settings, [kafka_settings.topic(PINS_CREATED.name)],
                       group_id=f"g-{uuid.uuid4()}") as consumer:
        (record,) = list(consumer.iter(max_records=1, idle_timeout=20))
    assert isinstance(record.value, PinCreated)
    assert record.value == sent and record.value.image_bytes == image
    assert record.key == b"p42"


def test_pin_creation_over_the_user_limit_is_refused_and_reported(kafka_settings: Settings) -> None:
    producer = PinProducer(kafka_settings, rate_limiter=RateLimiter(3))
    for i in range(3):
        producer.create_pin(pin_id=f"p{i}", user_id="eager", board_id="b", title="t",
                            image_ref="abc.jpg")
    with pytest.raises(RateLimitedError) as refused:
        producer.create_pin(pin_id="p3", user_id="eager", board_id="b", title="t", image_ref="abc.jpg")
    assert refused.value.user_id == "eager" and refused.value.retry_after > 0
    producer.create_pin(pin_id="p4", user_id="calm", board_id="b", title="t", image_ref="abc.jpg")
    producer.close()
    assert producer.events.delivered == 4  # the refused pin was never sent


def test_consumer_resumes_after_last_explicit_commit(kafka_settings: Settings) -> None:
    topic = kafka_settings.topic(PINS_INTERACTIONS.name)
    with PinProducer(kafka_settings) as producer:
        for kw in _interactions(20):
            producer.interact(**kw)  # type: ignore[arg-type]
    group = f"g-{uuid.uuid4()}"
    seen: list[uuid.UUID] = []
    with EventConsumer(kafka_settings, [topic], group_id=group) as consumer:
        for record in consumer.iter(max_records=20, idle_timeout=20):
            seen.append(record.value.event_id)
            if len(seen) <= 12:
                consumer.commit(record)  # commits per partition: later partitions stay uncommitted
    committed_ids = set(seen[:12])
    with EventConsumer(kafka_settings, [topic], group_id=group) as consumer:
        again = [r.value.event_id for r in consumer.iter(idle_timeout=8)]
    # Everything not committed is delivered again; nothing is lost.
    assert set(seen) - committed_ids <= set(again)
    assert set(again) | committed_ids == set(seen)


def test_undecodable_record_goes_to_dead_letter_with_reason_and_iteration_goes_on(
        kafka_settings: Settings) -> None:
    topic = kafka_settings.topic(PINS_INTERACTIONS.name)
    junk_reports: list[DeliveryReport] = []
    raw = EventProducer(kafka_settings, on_delivery=junk_reports.append)
    raw.send_raw(topic, b"u1", b"\x01not avro")  # same key, so before the good record
    raw.close()
    (junk,) = junk_reports
    with PinProducer(kafka_settings) as producer:
        good = producer.interact(user_id="u1", pin_id="p1", action="click", session_id="s")
    with EventConsumer(kafka_settings, [topic], group_id=f"g-{uuid.uuid4()}") as consumer:
        received = [r.value for r in consumer.iter(max_records=1, idle_timeout=20)]
        assert consumer.rejected == 1
    assert received == [good]

    dlq = Consumer(kafka_settings.kafka_consumer(f"g-{uuid.uuid4()}"))
    dlq_topic = kafka_settings.topic(DEADLETTER.name)
    dlq.assign([TopicPartition(dlq_topic, p, 0) for p in range(DEADLETTER.partitions)])
    msg = None
    for _ in range(40):
        msg = dlq.poll(0.5)
        if msg is not None and msg.error() is None:
            break
    dlq.close()
    assert msg is not None and msg.value() == b"\x01not avro" and msg.key() == b"u1"
    headers = dict(msg.headers() or [])
    assert headers[HEADER_DLQ_REASON] == b"bad_magic"
    assert headers[HEADER_DLQ_SOURCE] == f"{topic}/{junk.partition}/{junk.offset}".encode()


def test_sasl_settings_reach_producer_and_consumer(kafka_settings: Settings) -> None:
    from streams.settings import load_settings
    from streams.stack import kafka as stack_kafka

    sasl = load_settings(
        bootstrap_servers=stack_kafka.SASL_BOOTSTRAP, topic_prefix=kafka_settings.topic_prefix,
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
        sasl_username=stack_kafka.SASL_USERNAME, sasl_password=stack_kafka.SASL_PASSWORD,
        metrics_port=0)
    with PinProducer(sasl) as producer:
        sent = producer.interact(user_id="u1", pin_id="p1", action="closeup", session_id="s")
    with EventConsumer(sasl, [sasl.topic(PINS_INTERACTIONS.name)],
                       group_id=f"g-{uuid.uuid4()}") as consumer:
        (record,) = list(consumer.iter(max_records=1, idle_timeout=20))
    assert record.value == sent

    wrong = load_settings(
        bootstrap_servers=stack_kafka.SASL_BOOTSTRAP, topic_prefix=kafka_settings.topic_prefix,
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
        sasl_username=stack_kafka.SASL_USERNAME, sasl_password="not-the-password", metrics_port=0)
    producer = PinProducer(wrong)
    producer.interact(user_id="u1", pin_id="p2", action="click", session_id="s")
    assert producer.flush(5) == 1  # never acknowledged: authentication refused
    producer.events.purge()
    assert producer.events.delivered == 0 and producer.events.failed == 1


def test_a_consumer_of_a_topic_that_does_not_exist_says_how_to_create_it(kafka_settings: Settings) -> None:
    missing = kafka_settings.topic(f"missing-{uuid.uuid4().hex[:8]}")
    with (EventConsumer(kafka_settings, [missing], group_id=f"g-{uuid.uuid4()}") as consumer,
          pytest.raises(PinstreamError, match="topics apply") as error):
        for _ in range(15):  # librdkafka reports the missing topic after its first metadata
            consumer.poll(1.0)
    assert missing in str(error.value)
