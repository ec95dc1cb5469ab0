"""The interaction stage's own Kafka consumer: pins.interactions.v1 and pins.created.v1 in batches
through a confluent-kafka consumer group of its own, committed (asynchronously) after each batch
is done.

Not a faust agent: librdkafka keeps fetching in its own threads while a batch is processed, so the
next batch is whatever queued meanwhile (large under load, one record when idle), and no per-record
faust work competes with the batch on the event loop. Entry point only (the worker app runs it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import Counter

from processors.backoff import Backoff, FullJitterBackoff
from processors.graph_writer import GraphWriterFenced
from streams.consumer import raw_record
from streams.deadletter import RawRecord
from streams.errors import PinstreamError
from streams.groups import committed_offsets
from streams.kafka_errors import usable
from streams.metrics import REGISTRY
from streams.settings import Settings
from streams.topics import PINS_CREATED, PINS_INTERACTIONS

log = logging.getLogger(__name__)

MAX_BATCH = 2000
_POLL_S = 0.5  # how long one fetch call waits for a first record (also how soon a stop is seen)
_COMMIT_TIMEOUT_S = 30.0
BATCH_RETRIES = Counter("pinstream_interaction_batch_retries_total",
                        "Interaction batches that failed and were taken again from their first offsets.",
                        registry=REGISTRY)
SEEDED_PARTITIONS = Counter("pinstream_interaction_seeded_partitions_total",
                            "Partitions the graph group started where the worker group had committed.",
                            registry=REGISTRY)


class BatchStage(Protocol):
    """What the consumer drives: the interaction stage, or a fake in tests."""

    async def process(self, records: Sequence[RawRecord]) -> Any: ...

    def forget_partition(self, stream: str) -> None: ...


def fetch_batch(consumer: Consumer, max_batch: int, wait_s: float, linger_s: float) -> list[Message]:
    """What has queued (up to `max_batch`); when nothing has, wait up to `wait_s` for the first
    record and then `linger_s` for more."""
    messages = consumer.consume(max_batch, 0)
    if messages:
        return messages
    first = consumer.poll(wait_s)
    return [] if first is None else [first, *consumer.consume(max_batch - 1, linger_s)]


class InteractionConsumer:
    """Consume, process a batch, commit past it; on a failed batch, take it again from its start.

    A batch's offsets are committed only once `stage.process` returned (rows stored or reconciled,
    deltas and feed records acknowledged). Rebalances happen inside the fetch call, between
    batches, so a revoked partition never has a batch in flight: the stage only forgets its
    event ids. An interactions partition this group never committed starts where `legacy_group`
    (the worker's faust group, which read interactions before this consumer existed) had
    committed, so an upgrade does not replay the topic's whole retention."""

    def __init__(self, settings: Settings, stage: BatchStage, *, max_batch: int = MAX_BATCH,
                 linger_s: float | None = None, backoff: Backoff | None = None,
                 group_id: str | None = None, legacy_group: str | None = None,
                 consumer_config: Mapping[str, Any] | None = None,
                 topics: Sequence[str] | None = None, commit_interval_s: float = 0.0) -> None:
        self.settings = settings
        self.stage = stage
        self.max_batch = max_batch
        self.linger_s = settings.graph_batch_wait_ms / 1000 if linger_s is None else linger_s
        self.backoff = backoff or FullJitterBackoff(base_s=0.5, cap_s=10.0)
        self.group_id = group_id or settings.graph_group_id
        self.legacy_group = settings.worker_group_id if legacy_group is None else legacy_group
        self.topics = list(topics) if topics is not None else [settings.topic(PINS_INTERACTIONS.name),
                                                               settings.topic(PINS_CREATED.name)]
        self.batches = 0
        self.records = 0
        self.retries = 0
        self.seeded: dict[tuple[str, int], int] = {}
        self.assigned = 0  # partitions held now (kept by the rebalance callbacks)
        # Offsets are committed asynchronously (a round trip per batch left the stage idle for
        # it); the last ones again synchronously when the loop ends.
        self._done: dict[tuple[str, int], int] = {}
        # At most one commit per `commit_interval_s` while batches keep coming (0: after each
        # batch); what is held back is committed as soon as a fetch finds nothing. Each commit
        # costs the broker about as much as a fetch.
        self.commit_interval_s = commit_interval_s
        self.commits = 0
        self._pending: dict[tuple[str, int], int] = {}
        self._committed_at = 0.0
        self._consumer = Consumer(settings.kafka_consumer(self.group_id, on_commit=_log_failed_commit,
                                                          **(consumer_config or {})))
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._stopping = asyncio.Event()

    # --- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until `stop()`: fetch, process, commit. Raises GraphWriterFenced when a newer worker
        took over the graph (nothing more is processed or committed here)."""
        try:
            while not self._stopping.is_set():
                messages = await asyncio.to_thread(self._fetch)
                if messages:
                    await self._handle(messages)
                elif self._pending:  # idle: what was held back goes now
                    self._commit_pending()
        finally:
            await asyncio.to_thread(self._close)

    def health(self) -> dict[str, Any]:
        """For the worker's /healthz: the group, partitions held, and what was processed."""
        return {"group": self.group_id, "partitions": self.assigned, "batches": self.batches,
                "records": self.records, "retries": self.retries}

    def stop(self) -> None:
        """Ask the loop to end after its current batch (and fetch call)."""
        self._stopping.set()

    async def _handle(self, messages: list[Message]) -> None:
        records = [raw_record(m) for m in messages]
        attempt = 0
        while True:
            try:
                await self.stage.process(records)
                break
            except GraphWriterFenced:
                raise
            except PinstreamError as exc:
                # Nothing committed: the batch is taken again (the stage is idempotent by the
                # rows' applied offsets and the events' ids), after a pause that grows.
                attempt += 1
                self.retries += 1
                BATCH_RETRIES.inc()
                delay = self.backoff.delay(attempt)
                log.warning("interaction batch of %d failed (attempt %d), again in %.1f s: %s",
                            len(records), attempt, delay, exc)
                await asyncio.sleep(delay)
                if self._stopping.is_set():
                    return
        self.batches += 1
        self.records += len(records)
        for tp in _next_offsets(records):
            self._done[(tp.topic, tp.partition)] = self._pending[(tp.topic, tp.partition)] = tp.offset
        if time.monotonic() - self._committed_at >= self.commit_interval_s:
            self._commit_pending()

    def _commit_pending(self) -> None:
        offsets = [TopicPartition(topic, partition, offset)
                   for (topic, partition), offset in self._pending.items()]
        self._pending.clear()
        self._committed_at = time.monotonic()
        self._commit(offsets)

    def _fetch(self) -> list[Message]:
        messages = fetch_batch(self._consumer, self.max_batch, _POLL_S, self.linger_s)
        return [m for m in messages if usable(m, consumer="interaction consumer")]

    def _commit(self, offsets: list[TopicPartition], *, wait: bool = False) -> None:
        """Commit past finished batches: queued (the outcome reaches `_log_failed_commit`), or,
        with `wait`, in a round trip."""
        self.commits += 1
        try:
            if wait:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            # Not fatal: the batch is done and idempotent; whoever owns the partitions next takes
            # it again from the last commit that landed (after a rebalance, say).
            log.warning("interaction consumer: commit failed, the batch may be taken again: %s",
                        exc.args[0].str() if exc.args else exc)

    def _close(self) -> None:
        """Commit every finished batch once more, waiting (a queued commit may not have landed),
        then leave the group."""
        if self._done:
            self._commit([TopicPartition(topic, partition, offset)
                          for (topic, partition), offset in self._done.items()], wait=True)
        self._consumer.close()

    # --- rebalances (called inside the fetch call) ------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = len(partitions)  # eager rebalancing: the whole assignment each time
        if not self.legacy_group:
            return
        try:
            committed = consumer.committed(partitions, timeout=_COMMIT_TIMEOUT_S)
            # Interactions only: the worker group stopped reading them when this consumer took
            # over, so its offsets there are where the graph left off. It still reads pin
            # creations (the embed stage) and may be ahead of the graph on them: those start by
            # auto.offset.reset (pin->board edges re-applied are no-ops).
            fresh = [tp for tp in committed if tp.offset < 0 and tp.topic == self.topics[0]]
            if not fresh:
                return
            legacy = committed_offsets(AdminClient(self.settings.kafka_common()), self.legacy_group,
                                       timeout_s=_COMMIT_TIMEOUT_S)
            seeds = {key: legacy[key] for key in ((tp.topic, tp.partition) for tp in fresh) if key in legacy}
        except (KafkaException, PinstreamError) as exc:
            log.warning("interaction consumer: committed offsets not read (%s); starting by "
                        "auto.offset.reset", exc)
            return
        if not seeds:
            return
        for tp in partitions:
            seed = seeds.get((tp.topic, tp.partition))
            if seed is not None:
                tp.offset = seed
                self.seeded[(tp.topic, tp.partition)] = seed
        SEEDED_PARTITIONS.inc(len(seeds))
        log.info("interaction consumer: %d partitions start where %s had committed",
                 len(seeds), self.legacy_group)
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = 0
        # The revoked partitions' finished batches, committed before the next owner starts (a
        # queued commit might land after it): then forgotten, never committed from here again.
        for tp in partitions:
            self._pending.pop((tp.topic, tp.partition), None)
        handed = [TopicPartition(tp.topic, tp.partition, self._done.pop((tp.topic, tp.partition)))
                  for tp in partitions if (tp.topic, tp.partition) in self._done]
        if handed:
            self._commit(handed, wait=True)
        for tp in partitions:
            self.stage.forget_partition(f"{tp.topic}/{tp.partition}")


def _next_offsets(records: Sequence[RawRecord]) -> list[TopicPartition]:
    """Per partition, the offset after the batch's last record there (what a commit stores)."""
    last: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        last[key] = max(last.get(key, -1), record.offset)
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]


def _log_failed_commit(err: KafkaError | None, partitions: list[TopicPartition]) -> None:
    """librdkafka's outcome of a queued commit: a failure only means the batches after the last
    commit that landed are taken again by whoever owns the partitions next (idempotent)."""
    if err is not None:
        log.warning("interaction consumer: commit of %d partitions failed, batches may be taken "
                    "again: %s", len(partitions), err.str())
