"""Replay: copy a range of a topic into another topic exactly (keys, values, headers, timestamps),
adding a header that marks each copy with the original's topic/partition/offset.

The end of the range is fixed when the replay starts, so a live topic cannot make it endless.
Counts are exact: every record read is either acknowledged by Kafka or reported as failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from streams import metrics
from streams.consumer import raw_record
from streams.errors import PinstreamError
from streams.offsets import Position, partitions_of, plain_consumer, resolve, watermarks
from streams.producer import DeliveryReport, EventProducer
from streams.settings import Settings
from streams.topics import HEADER_REPLAY_OF

_IDLE_LIMIT_S = 10.0


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int  # inclusive
    end: int  # exclusive

    @property
    def span(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class ReplayPlan:
    topic: str
    into: str
    ranges: tuple[PartitionRange, ...]
    keep_partitions: bool  # same partition numbers in the target (it has at least as many)

    @property
    def upper_bound(self) -> int:
        """Offsets spanned; compaction or transaction markers can make the record count lower."""
        return sum(r.span for r in self.ranges)


@dataclass
class ReplayResult:
    read: dict[int, int] = field(default_factory=dict)  # partition -> records read
    acknowledged: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def total_read(self) -> int:
        return sum(self.read.values())


def plan_replay(settings: Settings, topic: str, into: str, start: Position, end: Position,
                partitions: list[int] | None = None) -> ReplayPlan:
    consumer = plain_consumer(settings, "replay-plan")
    try:
        source_parts = partitions_of(consumer, topic)
        target_parts = partitions_of(consumer, into)
        chosen = source_parts if partitions is None else [p for p in source_parts if p in partitions]
        ranges = []
        for p in chosen:
            marks = watermarks(consumer, topic, p)
            first = resolve(consumer, topic, p, start, marks)
            last = resolve(consumer, topic, p, end, marks)
            ranges.append(PartitionRange(p, first, max(first, last)))
    finally:
        consumer.close()
    return ReplayPlan(topic, into, tuple(ranges), keep_partitions=len(target_parts) >= len(source_parts))


def run_replay(settings: Settings, plan: ReplayPlan,
               progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Copy the planned ranges; `progress(n)` is called with the number of records just read."""
    result = ReplayResult(read={r.partition: 0 for r in plan.ranges})

    def delivered(report: DeliveryReport) -> None:
        if report.ok:
            result.acknowledged += 1
        else:
            result.failed += 1
            if len(result.errors) < 20:
                result.errors.append(f"{report.context}: {report.error}")

    active = {r.partition: r for r in plan.ranges if r.span > 0}
    if not active:
        return result
    producer = EventProducer(settings, on_delivery=delivered)
    consumer = plain_consumer(settings, "replay")
    consumer.assign([TopicPartition(plan.topic, r.partition, r.start) for r in active.values()])
    idle_since = time.monotonic()
    try:
        while active:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                _retire_finished(consumer, plan.topic, active)
                if msg is None and time.monotonic() - idle_since > _IDLE_LIMIT_S and active:
                    raise PinstreamError(
                        f"replay stalled: nothing read for {_IDLE_LIMIT_S:.0f}s with partitions "
                        f"{sorted(active)} unfinished; is Kafka up?")
                continue
            idle_since = time.monotonic()
            raw = raw_record(msg)
            bounds = active.get(raw.partition)
            if bounds is None or raw.offset >= bounds.end:
                _retire(consumer, plan.topic, active, raw.partition)
                continue
            result.read[raw.partition] += 1
            producer.send_raw(
                plan.into, raw.key, raw.value,
                headers=[*raw.headers, (HEADER_REPLAY_OF, raw.source.encode())],
                partition=raw.partition if plan.keep_partitions else None,
                timestamp_ms=raw.timestamp_ms, context=raw.source,
            )
            metrics.REPLAYED.labels(plan.topic, plan.into).inc()
            if progress is not None:
                progress(1)
            if raw.offset + 1 >= bounds.end:
                _retire(consumer, plan.topic, active, raw.partition)
    finally:
        consumer.close()
        producer.flush(60.0)
    unacknowledged = result.total_read - result.acknowledged - result.failed
    if unacknowledged:
        result.failed += unacknowledged
        result.errors.append(f"{unacknowledged} records not acknowledged within 60s")
    return result


def _retire(consumer: Consumer, topic: str, active: dict[int, PartitionRange], partition: int) -> None:
    if active.pop(partition, None) is not None:
        consumer.incremental_unassign([TopicPartition(topic, partition)])


def _retire_finished(consumer: Consumer, topic: str, active: dict[int, PartitionRange]) -> None:
    """Retire partitions whose position passed the end (gaps from compaction or markers)."""
    positions = consumer.position([TopicPartition(topic, p) for p in active])
    for tp in positions:
        if tp.offset >= 0 and tp.offset >= active[tp.partition].end:
            _retire(consumer, topic, active, tp.partition)
