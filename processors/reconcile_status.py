"""`pinstream reconcile status`: what the reconciler still has to do (the reconciliation topic past
its group's committed offsets) and what it gave up on (its dead letters), by stage and dependency."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from processors.reconcile import RECONCILER_REASONS
from processors.reconcile_kafka import reconciler_group
from streams.codec import AvroCodec
from streams.dlq import LetterFilter, read_dead_letters, read_topic
from streams.errors import ContractError
from streams.events import Reconciliation
from streams.offsets import partitions_of, plain_consumer, watermarks
from streams.settings import Settings
from streams.topics import HEADER_RECONCILE_DEPENDENCY, HEADER_RECONCILE_STAGE, RECONCILIATION

Key = tuple[str, str]  # (stage, dependency)


@dataclass
class ReconcileStatus:
    group: str
    pending: Counter[Key] = field(default_factory=Counter)
    failed: Counter[Key] = field(default_factory=Counter)
    failed_reasons: Counter[str] = field(default_factory=Counter)
    undecodable: int = 0
    committed: dict[int, int | None] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, int, int]]:
        """(stage, dependency, pending, failed), sorted."""
        return [(stage, dep, self.pending[(stage, dep)], self.failed[(stage, dep)])
                for stage, dep in sorted(set(self.pending) | set(self.failed))]


def reconcile_status(settings: Settings, codec: AvroCodec, *, group: str | None = None) -> ReconcileStatus:
    status = ReconcileStatus(group or reconciler_group(settings))
    topic = settings.topic(RECONCILIATION.name)
    # A consumer in the reconciler's group that never subscribes: it reads the committed offsets
    # without joining (and so without disturbing) the running reconciler.
    group_reader = Consumer(settings.kafka_consumer(status.group, **{"enable.auto.commit": False}))
    reader = plain_consumer(settings, "reconcile-status")
    try:
        partitions = partitions_of(reader, topic)
        committed = group_reader.committed([TopicPartition(topic, p) for p in partitions], timeout=30)
        starts = {}
        for tp in committed:
            marks = watermarks(reader, topic, tp.partition)
            status.committed[tp.partition] = tp.offset if tp.offset >= 0 else None
            status.ends[tp.partition] = marks.high
            starts[tp.partition] = max(tp.offset, marks.low) if tp.offset >= 0 else marks.low
        for msg in read_topic(reader, topic, starts):
            try:
                event = codec.decode_event(msg.value() or b"")
            except ContractError:
                status.undecodable += 1
                continue
            if isinstance(event, Reconciliation):
                status.pending[(str(event.stage), event.dependency)] += 1
            else:
                status.undecodable += 1
    finally:
        reader.close()
        group_reader.close()
    for letter in read_dead_letters(settings, LetterFilter()):
        if letter.reason in RECONCILER_REASONS:
            key = (letter.header(HEADER_RECONCILE_STAGE) or "UNKNOWN",
                   letter.header(HEADER_RECONCILE_DEPENDENCY) or "unknown")
            status.failed[key] += 1
            status.failed_reasons[letter.reason] += 1
    return status
