"""The reconciler on Kafka: a consumer of ops.reconciliation.v1 that pauses full partitions and
commits an offset only once the records before it are done or handed on and acknowledged."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from processors.reconcile import Partition, Reconciler
from streams.consumer import raw_record
from streams.deadletter import RawRecord
from streams.errors import DeliveryError, PinstreamError
from streams.kafka_errors import usable
from streams.settings import Settings
from streams.topics import RECONCILIATION

log = logging.getLogger(__name__)

_FETCH = 500
_POLL_S = 0.5
_SETTLE_TIMEOUT_S = 60.0


def reconciler_group(settings: Settings) -> str:
    """The reconciler's consumer group (namespaced by the topic prefix, like the worker's)."""
    return f"{settings.topic_prefix}{settings.reconcile_group_id}"


class RecordSource(Protocol):
    """What the loop needs of a consumer (ReconciliationSource on Kafka)."""

    def fetch(self, timeout: float) -> list[RawRecord]: ...

    def pause_only(self, full: set[Partition]) -> None: ...

    def commit(self, offsets: dict[Partition, int]) -> None: ...


class Outbound(Protocol):
    """What the loop needs of the producer the re-drives and dead letters go through."""

    failed: int

    def flush(self, timeout: float = ...) -> int: ...


class ReconciliationSource:
    """Reads the reconciliation topic for the reconciler's group; never commits on its own."""

    def __init__(self, settings: Settings, *, group_id: str | None = None,
                 on_revoke: Callable[[list[Partition]], None] | None = None) -> None:
        self.topic = settings.topic(RECONCILIATION.name)
        self.group_id = group_id or reconciler_group(settings)
        self._consumer = Consumer(settings.kafka_consumer(self.group_id))
        self._revoked = on_revoke
        self._paused: set[Partition] = set()
        self._consumer.subscribe([self.topic], on_revoke=self._on_revoke)

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        lost = [(p.topic, p.partition) for p in partitions]
        self._paused.difference_update(lost)
        if self._revoked is not None:
            self._revoked(lost)

    def fetch(self, timeout: float) -> list[RawRecord]:
        records = []
        for msg in self._consumer.consume(_FETCH, timeout):
            if usable(msg, consumer="reconciliation consumer"):
                records.append(raw_record(msg))
        return records

    def pause_only(self, full: set[Partition]) -> None:
        """Pause exactly the partitions in `full` (resume the others that were paused)."""
        if full - self._paused:
            self._consumer.pause([KafkaTopicPartition(t, p) for t, p in full - self._paused])
        if self._paused - full:
            self._consumer.resume([KafkaTopicPartition(t, p) for t, p in self._paused - full])
        self._paused = set(full)

    def commit(self, offsets: dict[Partition, int]) -> None:
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=[KafkaTopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                  asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError._NO_OFFSET:
                raise PinstreamError(f"commit failed for group {self.group_id}: {err.str()}") from exc

    def close(self) -> None:
        self._consumer.close()


@dataclass
class RunReport:
    read: int = 0
    finished: int = 0
    commits: int = 0


async def settle(producer: Outbound) -> None:
    """Every record produced so far (dead letters, embeddings, deltas, feeds) acknowledged, or raise."""
    failed_before = producer.failed
    remaining = await asyncio.to_thread(producer.flush, _SETTLE_TIMEOUT_S)
    if remaining or producer.failed > failed_before:
        raise DeliveryError(f"{remaining} records unacknowledged, {producer.failed - failed_before} "
                            "failed: not committing", topic="*", key=None, retriable=True)


async def run(reconciler: Reconciler, source: RecordSource, producer: Outbound, *,
              stop: asyncio.Event, idle_exit_s: float | None = None) -> RunReport:
    """Fetch, re-drive what is due, commit what is finished; until `stop` is set, or (with
    `idle_exit_s`) once nothing is held and nothing new arrived for that long."""
    report = RunReport()
    idle_since = time.monotonic()
    while not stop.is_set():
        due = reconciler.next_due_in()
        records = await asyncio.to_thread(source.fetch, _POLL_S if due is None else min(_POLL_S, due))
        for raw in records:
            reconciler.add(raw)
        report.read += len(records)
        finished = await reconciler.drive_due()
        report.finished += finished
        offsets = reconciler.committable()
        if offsets:
            try:
                await settle(producer)
            except DeliveryError as exc:  # Kafka unreachable: keep the offsets for a later commit
                log.warning("%s", exc)
                reconciler.restore(offsets)
            else:
                try:
                    source.commit(offsets)
                    report.commits += 1
                except PinstreamError as exc:  # the broker is away: commit these with the next ones
                    log.warning("%s", exc)
                    reconciler.restore(offsets)
        source.pause_only(reconciler.full())
        if records or reconciler.held():
            idle_since = time.monotonic()
        elif idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
            break
    return report
