"""Replay copies exact ranges (by offset and by time); group lag and resets; topics apply."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from streams.admin import apply_topics
from streams.consumer import EventConsumer
from streams.groups import execute_reset, group_lag, plan_reset
from streams.offsets import Position
from streams.producer import DeliveryReport, PinProducer
from streams.replay import plan_replay, run_replay
from streams.settings import Settings
from streams.topics import GRAPH_EDGES, HEADER_REPLAY_OF, PINS_INTERACTIONS
from tests.integration.kafka_fixtures import kafka_settings

pytestmark = pytest.mark.integration
__all__ = ["kafka_settings"]


def _produce(settings: Settings, n: int, tag: str) -> list[DeliveryReport]:
    reports: list[DeliveryReport] = []
    with PinProducer(settings, on_delivery=reports.append) as producer:
        for i in range(n):
            producer.interact(user_id=f"u{i % 5}", pin_id=f"{tag}{i}", action="click", session_id=tag)
    assert all(r.ok for r in reports)
    return reports


def _read_all(settings: Settings, topic: str, expected: int) -> list[object]:
    consumer = Consumer(settings.kafka_consumer(f"g-{uuid.uuid4()}"))
    consumer.subscribe([topic])
    out = []
    deadline = time.monotonic() + 30
    while len(out) < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            out.append(msg)
    extra = consumer.poll(2.0)  # nothing more than expected
    consumer.close()
    assert extra is None, "more records than expected"
    return out


def test_topics_apply_twice_is_a_no_op_and_repairs_config_drift(kafka_settings: Settings) -> None:
    assert {c.action for c in apply_topics(kafka_settings)} == {"unchanged"}
    topic = kafka_settings.topic(PINS_INTERACTIONS.name)
    admin = AdminClient(kafka_settings.kafka_common())
    drift = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    for f in admin.incremental_alter_configs([drift]).values():
        f.result(timeout=30)
    plain = ConfigResource(ConfigResource.Type.TOPIC, topic)
    deadline = time.monotonic() + 10  # the broker applies the controller's record asynchronously
    while admin.describe_configs([plain])[plain].result()["retention.ms"].value != "1000":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    changes = {c.topic: c for c in apply_topics(kafka_settings)}
    assert changes[topic].action == "updated" and "retention.ms" in changes[topic].detail
    assert {c.action for c in apply_topics(kafka_settings)} == {"unchanged"}


def test_replay_by_offset_copies_exact_range_with_keys_headers_and_marker(
        kafka_settings: Settings) -> None:
    source = kafka_settings.topic(PINS_INTERACTIONS.name)
    into = kafka_settings.topic(GRAPH_EDGES.name)  # any existing topic with 6 partitions
    reports = _produce(kafka_settings, 60, "a")
    plan = plan_replay(kafka_settings, source, into, Position(offset=2), Position(offset=7))
    expected = sum(max(0, min(7, hi) - 2) for hi in _ends(reports).values())
    assert plan.upper_bound == expected
    result = run_replay(kafka_settings, plan)
    assert result.total_read == expected == result.acknowledged and result.failed == 0
    copies = _read_all(kafka_settings, into, expected)
    for msg in copies:
        marker = dict(msg.headers())[HEADER_REPLAY_OF].decode()
        src_topic, partition, offset = marker.rsplit("/", 2)
        assert src_topic == source and int(partition) == msg.partition() and 2 <= int(offset) < 7
    sent = {(r.partition, r.offset): r.key for r in reports}
    assert all(sent[(m.partition(), int(dict(m.headers())[HEADER_REPLAY_OF].rsplit(b"/", 1)[1]))]
               == m.key() for m in copies)


def test_replay_by_time_copies_only_records_after_that_time(kafka_settings: Settings) -> None:
    source = kafka_settings.topic(PINS_INTERACTIONS.name)
    into = kafka_settings.topic(GRAPH_EDGES.name)
    _produce(kafka_settings, 25, "old")
    time.sleep(1.5)
    cut = datetime.now(UTC)
    time.sleep(0.5)
    _produce(kafka_settings, 17, "new")
    plan = plan_replay(kafka_settings, source, into, Position(time=cut), Position(edge="end"))
    result = run_replay(kafka_settings, plan)
    assert result.total_read == 17 and result.acknowledged == 17
    copies = _read_all(kafka_settings, into, 17)
    codec_consumer = EventConsumer(kafka_settings, [into], group_id=f"g-{uuid.uuid4()}")
    pins = {r.value.pin_id for r in codec_consumer.iter(max_records=17, idle_timeout=15)}  # type: ignore[attr-defined]
    codec_consumer.close()
    assert len(copies) == 17 and pins == {f"new{i}" for i in range(17)}


def test_group_lag_and_reset_to_datetime_dry_run_then_execute(kafka_settings: Settings) -> None:
    topic = kafka_settings.topic(PINS_INTERACTIONS.name)
    start = datetime.now(UTC)
    _produce(kafka_settings, 30, "x")
    group = f"g-{uuid.uuid4()}"
    with EventConsumer(kafka_settings, [topic], group_id=group) as consumer:
        for record in consumer.iter(max_records=30, idle_timeout=20):
            consumer.commit(record)
    lag = group_lag(kafka_settings, group)
    assert sum(r.lag for r in lag) == 0 and sum(r.end for r in lag) == 30
    moves = plan_reset(kafka_settings, group, start)
    assert sum((m.current or 0) - m.target for m in moves) == 30  # dry run: back to the start
    assert sum(r.lag for r in group_lag(kafka_settings, group)) == 0  # nothing changed yet
    execute_reset(kafka_settings, group, moves)
    assert sum(r.lag for r in group_lag(kafka_settings, group)) == 30


def _ends(reports: list[DeliveryReport]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for r in reports:
        assert r.partition is not None and r.offset is not None
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return ends
