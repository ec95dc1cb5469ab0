"""A downstream consumer (the consumer SDK on feeds.updated.v1) across a stop and start of the real
Kafka broker: its polls neither raise nor return anything while the broker is down, and afterwards
it reads on from its last commit: every record published since, none it had committed."""

from __future__ import annotations

import time
import uuid

import pytest

from streams.consumer import EventConsumer
from streams.events import FeedItem, FeedUpdated
from streams.producer import EventProducer
from streams.settings import Settings
from streams.stack import manager
from streams.stack.model import Action
from streams.topics import FEEDS_UPDATED
from tests.integration.kafka_fixtures import kafka_settings

pytestmark = pytest.mark.integration
__all__ = ["kafka_settings"]


def _feeds(user_count: int, round_: int) -> list[FeedUpdated]:
    return [FeedUpdated(user_id=f"u{i}", model=f"round-{round_}",
                        items=(FeedItem(pin_id=f"p{i}-{round_}", score=1.0, reason="walk:board"),))
            for i in range(user_count)]


def _publish(settings: Settings, feeds: list[FeedUpdated]) -> None:
    producer = EventProducer(settings)
    for feed in feeds:
        producer.send_event(FEEDS_UPDATED, feed.user_id, feed)
    producer.close(60)


def _read(consumer: EventConsumer, count: int, timeout_s: float) -> list[FeedUpdated]:
    got: list[FeedUpdated] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        record = consumer.poll(1.0)
        if record is not None:
            assert isinstance(record.value, FeedUpdated)
            got.append(record.value)
    return got


def test_a_downstream_consumer_reads_on_from_its_commit_after_the_broker_restarts(
        kafka_settings: Settings) -> None:
    before, after = _feeds(40, 1), _feeds(40, 2)
    _publish(kafka_settings, before)
    consumer = EventConsumer(kafka_settings, [kafka_settings.topic(FEEDS_UPDATED.name)],
                             group_id=f"downstream-{uuid.uuid4().hex[:8]}")
    try:
        first = _read(consumer, 40, 60)
        assert sorted(f.event_id for f in first) == sorted(f.event_id for f in before)
        consumer.commit()

        (change,) = manager.down(["kafka"])
        if change.action is not Action.STOPPED:
            pytest.fail(f"kafka was not stopped ({change.action}): start the stack with "
                        "`pinstream stack up` before the integration tests")
        try:
            outage_ends = time.monotonic() + 8
            while time.monotonic() < outage_ends:  # polls return nothing; they do not raise
                assert consumer.poll(1.0) is None
        finally:
            manager.up(["kafka"])

        _publish(kafka_settings, after)
        second = _read(consumer, 40, 120)
        # From its commit on: every feed of the second round, none of the first.
        assert sorted(f.event_id for f in second) == sorted(f.event_id for f in after)
        assert _read(consumer, 1, 5) == []
    finally:
        consumer.close()
