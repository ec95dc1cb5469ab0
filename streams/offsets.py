"""Offsets by number or by time: parse operator input and resolve it per partition."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.errors import InputError, PinstreamError
from streams.jsonl import parse_event_time
from streams.settings import Settings

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Position:
    """An offset (same number in every partition), a time, or the start/end of the log."""

    offset: int | None = None
    time: datetime | None = None
    edge: str | None = None  # "beginning" | "end"

    def __str__(self) -> str:
        if self.offset is not None:
            return f"offset {self.offset}"
        if self.time is not None:
            return self.time.isoformat()
        return str(self.edge)


def parse_position(text: str) -> Position:
    """'beginning', 'end', an integer offset, or an ISO-8601 time with offset (or Z)."""
    lowered = text.strip().lower()
    if lowered in ("beginning", "earliest"):
        return Position(edge="beginning")
    if lowered in ("end", "latest"):
        return Position(edge="end")
    if lowered.isdigit():
        return Position(offset=int(lowered))
    try:
        when = parse_event_time(text.strip())
    except InputError as exc:
        raise InputError(f"{text!r} is neither an offset, an ISO-8601 time, 'beginning' nor 'end': "
                         f"{exc}") from None
    assert when is not None
    return Position(time=when)


@dataclass(frozen=True)
class Watermarks:
    low: int
    high: int


def partitions_of(consumer: Consumer, topic: str) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=TIMEOUT_S)
    meta = metadata.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise PinstreamError(f"topic {topic} not found; check the name or run `pinstream topics apply`")
    return sorted(meta.partitions)


# A partition just created (or moving after a broker restart) answers these until its leader is
# known everywhere: worth waiting for, within TIMEOUT_S.
_LEADER_PENDING = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                             KafkaError.UNKNOWN_TOPIC_OR_PART})


def watermarks(consumer: Consumer, topic: str, partition: int) -> Watermarks:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=TIMEOUT_S)
            return Watermarks(low, high)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args and isinstance(exc.args[0], KafkaError) else None
            if code not in _LEADER_PENDING or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def resolve(consumer: Consumer, topic: str, partition: int, position: Position,
            marks: Watermarks) -> int:
    """The concrete offset of `position` in one partition, clamped to [low, high]."""
    if position.edge == "beginning":
        return marks.low
    if position.edge == "end":
        return marks.high
    if position.offset is not None:
        return min(max(position.offset, marks.low), marks.high)
    assert position.time is not None
    millis = int(position.time.timestamp() * 1000)
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, partition, millis)],
                                           timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise PinstreamError(f"offsets_for_times on {topic}/{partition}: {exc.args[0]}") from exc
    offset = found[0].offset
    # -1: no record at or after that time, so the position is the end of the log.
    return marks.high if offset < 0 else min(max(offset, marks.low), marks.high)


def plain_consumer(settings: Settings, purpose: str) -> Consumer:
    """A consumer for assign()-based reads: it never commits and joins no active group."""
    return Consumer(settings.kafka_consumer(f"pinstream-{purpose}", **{
        "enable.auto.commit": False, "enable.auto.offset.store": False,
    }))
