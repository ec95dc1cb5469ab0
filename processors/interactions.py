"""The interaction stage: pins.interactions.v1 (and pin->board edges from pins.created.v1) ->
graph rows in HBase + GraphEdgeDelta records, trending, targeted feed invalidation on hides, live
patches of the cached feeds a batch changes, and coalesced full re-ranks (at most one per user per
interval), each published as FeedUpdated.

A refresh owed to a user outlives the worker: before a batch is acknowledged its users are marked
stale in Redis (or, with Redis down, handed to the reconciler), the mark is cleared once the feed
is written, and a starting worker refreshes every user still marked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram

from processors.feed import FeedResult, FeedService
from processors.feed_patch import PatchParams, PlannedPatch, TimedInteraction, plan_patches
from processors.graph import GraphBatch, GraphEvent, GraphProcessor, graph_inputs
from processors.graph_deltas import DeltaEncoder
from processors.graph_state import Position
from processors.live_patches import LivePatcher, RefreshPlan, feed_headers
from processors.reconcile_events import ReconciliationEmitter
from sinks.hbase import store_unreachable
from sinks.redis import FeedCache
from streams.codec import AvroCodec
from streams.deadletter import DeadLetterWriter, RawRecord
from streams.errors import ContractError, DeliveryError, SinkError
from streams.events import ConsumedRecord, FeedUpdated, InteractionAction, PinInteraction, Stage
from streams.metrics import REGISTRY
from streams.producer import EventProducer
from streams.topics import FEEDS_UPDATED, GRAPH_EDGES

log = logging.getLogger(__name__)
T = TypeVar("T")

_STORE_RETRIES = 3  # for a store that answers with an error; an unreachable one is waited for
_STORE_WAIT_MAX_S = 5.0
GRAPH_STORE_WAITS = Counter("pinstream_graph_store_waits_total",
                            "Graph batches held back and retried because HBase failed.",
                            registry=REGISTRY)
_REFRESH_CHUNK = 8  # feeds per Redis pipeline when refreshing
FEED_REFRESH_LAG = Histogram(
    "pinstream_feed_refresh_lag_seconds",
    "From the oldest interaction a feed refresh covers (its Kafka timestamp) to the feed in Redis.",
    buckets=(0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0), registry=REGISTRY,
)
INTERACTION_BATCHES = Histogram(
    "pinstream_interaction_batch_seconds",
    "Interaction batches by phase: wait (oldest record's Kafka timestamp to the batch's start), "
    "graph (HBase read, apply), deltas, cache (Redis: stale marks, trending, hides; beside the "
    "deltas: what is left of it), patch "
    "(live feed patches), flush (HBase write, beside cache and patch: what is left of it), settle "
    "(every record produced acknowledged), process (all of it).", ["phase"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0), registry=REGISTRY,
)
for _phase in ("wait", "graph", "deltas", "cache", "patch", "flush", "settle", "process"):
    INTERACTION_BATCHES.labels(_phase)  # exported from the start, for the alerts
INTERACTION_BATCH_RECORDS = Histogram(
    "pinstream_interaction_batch_records", "Records per interaction batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000), registry=REGISTRY,
)
RERANK_BACKLOG = Gauge("pinstream_feed_rerank_backlog",
                       "Users owed a full re-rank by this worker (coalesced, not yet computed).",
                       registry=REGISTRY)
_SETTLE_TIMEOUT_S = 60.0
# A full re-rank waits (at most this long) while an interaction batch is being processed: batches
# and their live patches come first, re-ranks take the CPU left between them (one interpreter).
_RERANK_YIELD_MAX_S = 5.0
_RERANK_PAUSE_MAX_S = 1.0
_PATCH_QUEUE_BATCHES = 8  # batches of planned live patches waiting for Redis
_RECOVER_LIMIT = 100_000  # stale users taken over at start (bounded; the rest on the next start)


async def _finish(*tasks: asyncio.Task[object] | None) -> None:
    """Wait for these tasks, their errors dropped (the batch fails with its own)."""
    for task in tasks:
        if task is not None:
            with contextlib.suppress(Exception):
                await task


class _PhaseClock:
    def __init__(self) -> None:
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        INTERACTION_BATCHES.labels(phase).observe(now - self.last)
        self.last = now


@dataclass
class InteractionReport:
    received: int = 0
    applied: int = 0
    deltas: int = 0
    hides: int = 0
    dead_lettered: int = 0
    reconciliations: int = 0
    dirty_users: int = 0
    patches_queued: int = 0


class InteractionStage:
    """Runs batches of interaction and pin records through the graph, trending and feeds."""

    def __init__(self, *, graph: GraphProcessor, feeds: FeedService, cache: FeedCache,
                 producer: EventProducer, emitter: ReconciliationEmitter, codec: AvroCodec,
                 refresh_interval_s: float, refresh_threads: int = 1,
                 patches: PatchParams | None = None, rerank_share: float = 1.0,
                 rerank_share_behind: float | None = None, behind_s: float = 0.1,
                 live_announce_interval_s: float = 30.0) -> None:
        self.graph = graph
        self.feeds = feeds
        self.cache = cache
        self.producer = producer
        self.emitter = emitter
        self.codec = codec
        self.delta_records = DeltaEncoder(codec)
        self.delta_topic = producer.settings.topic(GRAPH_EDGES.name)
        self.dead_letters = DeadLetterWriter(producer)
        self.plan = RefreshPlan(refresh_interval_s)
        RERANK_BACKLOG.set_function(lambda: len(self.plan.dirty))
        self.refresh_threads = refresh_threads
        self.rerank_share = rerank_share
        # While the stage is behind (a batch's oldest record waited more than `behind_s`), re-ranks
        # take at most this share: the live patches are what meets the feed SLO, re-ranks refine.
        self.rerank_share_behind = rerank_share if rerank_share_behind is None else rerank_share_behind
        self.behind_s = behind_s
        self.behind = False
        # Whether another consumer of the machine's CPU is behind too (the live patch process):
        # re-ranks then keep to rerank_share_behind as well.
        self.others_behind: Callable[[], bool] = lambda: False
        self.patches = patches
        # Live-patched feeds owed an announcement (at most one per user per interval): each
        # announcement reads the whole feed back and encodes its 200 items (~0.5-1 ms of CPU);
        # one per patch was the largest cost of a batch at 1,000 interactions/s, and at 5,000/s
        # one per user per 5 s still took 12 % of the stage's samples. The re-rank announces
        # the feed anyway; these cover the users whose re-rank lags.
        self.live_announce_interval_s = live_announce_interval_s
        self._patch_queue: asyncio.Queue[list[PlannedPatch]] = asyncio.Queue(_PATCH_QUEUE_BATCHES)
        self._patcher: asyncio.Task[None] | None = None
        self._between_batches = threading.Event()
        self._between_batches.set()
        self.woken = asyncio.Event()
        self.recovered = False  # the stale marks left by earlier workers are taken over
        # Users whose refresh went to the reconciler while Redis was down: one record each per
        # outage, not one per batch (cleared by the next successful Redis write).
        self._handed_over: set[str] = set()

    @functools.cached_property
    def live_patcher(self) -> LivePatcher:
        return LivePatcher(self.cache, self.producer, model=self.feeds.computer.params.model,
                           announce_interval_s=self.live_announce_interval_s)

    async def process(self, records: Sequence[RawRecord]) -> InteractionReport:
        self._between_batches.clear()
        started = time.time()
        stamps = [r.timestamp_ms for r in records if r.timestamp_ms is not None]
        if stamps:
            waited = max(0.0, started - min(stamps) / 1000)
            INTERACTION_BATCHES.labels("wait").observe(waited)
            self.behind = waited > self.behind_s
        INTERACTION_BATCH_RECORDS.observe(len(records))
        try:
            return await self._process(records)
        finally:
            self._between_batches.set()
            INTERACTION_BATCHES.labels("process").observe(time.time() - started)

    async def _process(self, records: Sequence[RawRecord]) -> InteractionReport:
        report = InteractionReport(received=len(records))
        consumed: list[ConsumedRecord] = []
        for record in records:
            try:
                event = self.codec.decode_event(record.value or b"")
            except ContractError as exc:
                self.dead_letters.send(record, exc.reason, str(exc))
                report.dead_lettered += 1
                continue
            consumed.append(ConsumedRecord(record.topic, record.partition, record.offset,
                                           record.timestamp_ms, record.key, record.headers, event))
        events, positions = graph_inputs(consumed)
        clock = _PhaseClock()
        batch = await self._apply_graph(events, positions, consumed, records, report)
        clock.lap("graph")
        # The HBase write and the batch's Redis call (stale marks, written once the graph is
        # applied, trending, hides) run beside the deltas' encoding: live patches read the applied
        # rows from the cache, and the batch is acknowledged only after all of them are done.
        interactions = [e for e in events if isinstance(e, PinInteraction)]
        caching = asyncio.create_task(self._update_cache(interactions, report))
        flushed = None
        try:
            if batch is not None:
                flushed = asyncio.create_task(self._flush_graph(consumed, records, report))
                report.applied = batch.applied
            # Let both tasks start (hand their store calls to threads) before the deltas' loop,
            # which does not yield: created tasks only run at the batch's next await.
            await asyncio.sleep(0)
            if batch is not None:
                for key, value in self.delta_records.records(batch.announcements):
                    self.producer.send_raw(self.delta_topic, key, value)
                report.deltas = len(batch.announcements)
        except BaseException:
            await _finish(caching, flushed)  # no task outlives its batch
            raise
        clock.lap("deltas")
        cached = await caching
        clock.lap("cache")
        # Patches after the batch's own Redis work: planned first, they ran beside it and made
        # batches slower (feed bench, 3 runs each at 1,000/s: live p50 0.5-3.6 s against 0.2-0.7 s).
        if cached and batch is not None:
            await self._patch_feeds(consumed, report)
        clock.lap("patch")
        if flushed is not None:
            await flushed
            clock.lap("flush")
        for item in consumed:
            if isinstance(item.value, PinInteraction):
                self.plan.mark(item.value.user_id, item.timestamp_ms)
        report.dirty_users = len(self.plan.dirty)
        await self._settle()
        clock.lap("settle")
        if self.plan.dirty:
            self.woken.set()
        return report

    def forget_partition(self, stream: str) -> None:
        """A source partition went to another worker: drop its event ids (rows stay cached)."""
        self.graph.forget_partition(stream)

    async def _apply_graph(self, events: list[GraphEvent], positions: list[Position],
                           consumed: list[ConsumedRecord], records: Sequence[RawRecord],
                           report: InteractionReport) -> GraphBatch | None:
        """Apply the batch to the cached rows (reading the missing ones from HBase)."""
        return await self._graph_call(lambda: self.graph.apply(events, positions), consumed, records, report)

    async def _flush_graph(self, consumed: list[ConsumedRecord], records: Sequence[RawRecord],
                           report: InteractionReport) -> bool:
        """Write the changed rows to HBase; False when the batch went to the reconciler instead."""
        return await self._graph_call(self.graph.flush, consumed, records, report) is not None

    async def _graph_call(self, call: Callable[[], T], consumed: list[ConsumedRecord],
                          records: Sequence[RawRecord], report: InteractionReport) -> T | None:
        delay = 0.5
        attempt = 0
        while True:
            attempt += 1
            try:
                return await asyncio.to_thread(call)
            except SinkError as exc:
                # HBase unreachable: hold the batch (backpressure: the stream stops taking
                # records) until it answers. Handing it to the reconciler instead would let this
                # partition's next batches move the rows' applied offsets past it, and the
                # re-drive would then be skipped as already applied: edges lost.
                if attempt < _STORE_RETRIES or store_unreachable(exc):
                    log.warning("graph store failed (attempt %d), batch held: %s", attempt, exc)
                    GRAPH_STORE_WAITS.inc()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _STORE_WAIT_MAX_S)
                    continue
                # Applied in memory, not yet stored: the rows stay dirty and are written by the
                # next successful flush; the records are handed to the reconciler meanwhile
                # (re-applying them is idempotent by the rows' applied offsets, which holds only
                # if one source partition's events are re-applied in their order: hence keyed by
                # source partition, so they share a reconciliation partition).
                by_position = {(r.topic, r.partition, r.offset): r for r in records}
                for record in consumed:
                    raw = by_position[(record.topic, record.partition, record.offset)]
                    self.emitter.report(exc, stage=Stage.GRAPH, entity_type="event",
                                        entity_id=str(record.value.event_id), payload=raw.value,
                                        source=record, key=f"{record.topic}/{record.partition}")
                report.reconciliations += len(consumed)
                return None

    async def _update_cache(self, interactions: list[PinInteraction], report: InteractionReport) -> bool:
        """Stale marks, trending and hides in Redis; False when Redis failed (then reconciled)."""
        hides = [e for e in interactions if e.action == InteractionAction.HIDE]
        users = sorted({e.user_id for e in interactions})

        def write() -> None:
            # Stale marks first (the durable record of the refreshes owed), then trending, then
            # the hides out of the cached feeds at once (not at the next refresh or the TTL).
            self.cache.record_batch(users, interactions, [(hide.user_id, hide.pin_id) for hide in hides])

        if not interactions:
            return True
        try:
            await asyncio.to_thread(write)
            report.hides = len(hides)
            self._handed_over.clear()
            return True
        except SinkError as exc:
            log.warning("stale marks/trending/hide invalidation not applied: %s", exc)
            for hide in hides:  # each hide keeps its event, so the re-drive can apply it
                self.emitter.report(exc, stage=Stage.FEED, entity_type="user", entity_id=hide.user_id,
                                    payload=self.codec.encode_event(hide), dependency="redis")
            report.reconciliations += len(hides)
            hidden = {hide.user_id for hide in hides}
            self._handed_over.update(hidden)
            for user in users:
                report.reconciliations += self._hand_over(user, exc)
            return False

    async def _patch_feeds(self, consumed: list[ConsumedRecord], report: InteractionReport) -> None:
        """Plan the live patches this batch makes (from the rows it just applied) and queue them
        for the patcher, so their Redis round trip and announcements overlap the next batch."""
        if self.patches is None:
            return
        timed = [TimedInteraction(r.value, r.timestamp_ms) for r in consumed
                 if isinstance(r.value, PinInteraction)]
        planned = plan_patches(timed, self.graph.cache.peek, self.patches, int(time.time() * 1000))
        if not planned:
            return
        if self._patcher is None or self._patcher.done():
            self._patcher = asyncio.get_running_loop().create_task(self._run_patches())
        await self._patch_queue.put(planned)  # bounded: a slow Redis holds the batches back
        report.patches_queued = len(planned)

    async def _run_patches(self) -> None:
        """Apply queued patches (all that waited, in one pipeline), then announce the patched feeds
        that are due; a failure only logs: the users are marked stale, so the re-rank still comes."""
        while True:
            planned = await self._next_patches()
            if planned:
                await asyncio.to_thread(self.live_patcher.apply, planned)
            await asyncio.to_thread(self.live_patcher.announce_due)

    async def _next_patches(self) -> list[PlannedPatch]:
        """All the planned patches that queued, waiting for some at most a second (or half an
        announcement interval): announcements still go out when no more interactions come."""
        try:
            wait_s = min(self.live_patcher.live.interval_s / 2, 1.0)
            planned = list(await asyncio.wait_for(self._patch_queue.get(), wait_s))
        except TimeoutError:
            return []
        while not self._patch_queue.empty():
            planned.extend(self._patch_queue.get_nowait())
        return planned

    def _hand_over(self, user_id: str, exc: SinkError) -> int:
        """Ask the reconciler to rewrite the user's feed, once per Redis outage; 1 if asked now."""
        if user_id in self._handed_over:
            return 0
        self._handed_over.add(user_id)
        self.emitter.report(exc, stage=Stage.FEED, entity_type="user", entity_id=user_id, payload=None,
                            dependency="redis")
        return 1

    async def recover_stale(self) -> int:
        """Take over the refreshes that earlier workers owed (marked stale, never cleared);
        returns how many users were marked here. False `recovered` until Redis answers."""
        users = await asyncio.to_thread(self.cache.stale_users, _RECOVER_LIMIT)
        for user in users:
            self.plan.mark(user, None)
        self.recovered = True
        if users:
            log.info("feeds: %d refreshes owed by an earlier worker taken over", len(users))
            self.woken.set()
        return len(users)

    async def refresh_when_woken(self, max_wait_s: float) -> list[FeedResult]:
        """Wait for the next processed batch (or `max_wait_s`), then refresh the feeds due."""
        if not self.recovered:
            try:
                await self.recover_stale()
            except SinkError as exc:
                log.warning("feeds: stale marks not read yet (%s); trying again", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.woken.wait(), timeout=max_wait_s)
        self.woken.clear()
        return await self.refresh_due()

    async def refresh_due(self, limit: int = 500) -> list[FeedResult]:
        """Recompute the feeds that are due, publish FeedUpdated, reconcile the uncached ones.

        In chunks of `_REFRESH_CHUNK` users (one Redis pipeline each), `refresh_threads` at a
        time: a feed is cached and announced as soon as its chunk is done, not after all of them,
        and one user's store round trips overlap another's ranking."""
        users = self.plan.due(time.monotonic(), limit)
        if not users:
            return []
        order = list(users)
        gate = asyncio.Semaphore(self.refresh_threads)

        async def refresh(chunk: list[str]) -> list[FeedResult]:
            async with gate:
                computed_at = time.time()
                results = await asyncio.to_thread(self.feeds.refresh, chunk, before_each=self._rerank_pacer(),
                                                  pause=self._rerank_pause)
                cached = [r.user_id for r in results if not r.needs_reconciliation]
                try:
                    await asyncio.to_thread(self.cache.clear_stale, cached, computed_at=computed_at)
                except SinkError as exc:  # harmless: they are refreshed again by the next start
                    log.warning("feeds: stale marks not cleared: %s", exc)
            self._announce(results, users)
            return results

        chunks = await asyncio.gather(*(refresh(order[i:i + _REFRESH_CHUNK])
                                        for i in range(0, len(order), _REFRESH_CHUNK)))
        await self._settle()
        return [result for chunk in chunks for result in chunk]

    def _rerank_pacer(self) -> Callable[[], None]:
        """What a chunk of re-ranks runs before each feed: a pause that keeps re-ranks within
        `rerank_share` of the time (after a feed that took t, t * (1/share - 1)), or within
        `rerank_share_behind` while the stage is behind, then a wait while an interaction batch
        is being processed. One interpreter runs both: a re-rank holding it makes the batch, and
        every live patch behind it, wait."""
        started: list[float] = []

        def before_each() -> None:
            share = self.rerank_share_behind if self.behind or self.others_behind() else self.rerank_share
            if started and share < 1.0:
                spent = time.perf_counter() - started[0]
                time.sleep(min(spent * (1.0 / share - 1.0), _RERANK_PAUSE_MAX_S))
            self._rerank_pause()
            started[:] = [time.perf_counter()]

        return before_each

    def _rerank_pause(self) -> float:
        """Within a re-rank (between its stages and its walk rounds): wait while an interaction
        batch is being processed, so the batch does not share the interpreter with the rest of the
        feed; returns the seconds waited. Before this, a batch that came during a feed ran at about
        half speed until the feed was done (1,000/s: live p99 203 ms against 95 ms with re-ranks
        almost off)."""
        if self._between_batches.is_set():
            return 0.0
        started = time.perf_counter()
        self._between_batches.wait(_RERANK_YIELD_MAX_S)
        return time.perf_counter() - started

    def _announce(self, results: list[FeedResult], since: dict[str, int | None]) -> None:
        written_ms = time.time() * 1000
        for result in results:
            self._send_feed(result.event(), b"full", since.get(result.user_id), written_ms,
                            None if result.needs_reconciliation else FEED_REFRESH_LAG)
            self._reconcile_uncached(result)

    def _send_feed(self, event: FeedUpdated, change: bytes, oldest_ms: int | None, written_ms: float,
                   lag: Histogram | None) -> None:
        """Publish a feed on feeds.updated.v1, saying how it changed and (when known) the Kafka
        timestamp of the oldest interaction it covers; `lag` times that interaction's wait."""
        if oldest_ms is not None and lag is not None:
            lag.observe(max(0.0, written_ms - oldest_ms) / 1000)
        self.producer.send_event(FEEDS_UPDATED, event.user_id, event, headers=feed_headers(change, oldest_ms))

    def read_feed(self, user_id: str, *, offset: int = 0, count: int | None = None) -> FeedResult:
        """A page of the user's feed (the cache first, else computed); a feed that Redis could not
        take is reported for reconciliation, as after a refresh."""
        result = self.feeds.read(user_id, offset=offset, count=count)
        self._reconcile_uncached(result)
        return result

    def _reconcile_uncached(self, result: FeedResult) -> None:
        if result.needs_reconciliation and result.cache_error is not None:
            self._hand_over(result.user_id, result.cache_error)

    async def _settle(self) -> None:
        failed_before = self.producer.failed
        remaining = await asyncio.to_thread(self.producer.flush, _SETTLE_TIMEOUT_S)
        if remaining or self.producer.failed > failed_before:
            raise DeliveryError(f"{remaining} records unacknowledged", topic="*", key=None,
                                retriable=True)
