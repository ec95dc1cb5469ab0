"""The live patch stage: interaction batches -> patches of the users' cached feeds, planned from
rows kept beside it (processors.live_rows), in a process of its own.

Why a process of its own: the interaction stage applies the graph, writes HBase, publishes the
deltas and runs the re-ranks in one interpreter, and at 5,000 interactions/s that interpreter is
at its capacity, so a patch planned at the end of a batch waits for every batch before it. Here
a patch waits only for other patches. The interaction stage still owns everything else (graph,
stale marks, trending, hides, re-ranks); a record it cannot decode it dead-letters, so this stage
only counts and skips it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from processors.feed_patch import PatchParams, PlannedPatch, RelatedCache, TimedInteraction, plan_patches
from processors.live_patches import LIVE_ANNOUNCE_MAX, LivePatcher
from processors.live_rows import LiveRows
from sinks.hbase_graph import node_key
from streams.codec import AvroCodec
from streams.deadletter import RawRecord
from streams.errors import ContractError, PinstreamError
from streams.events import NodeType, PinInteraction

log = logging.getLogger(__name__)
ANNOUNCE_IN_BATCH = 10  # patched feeds announced right after a batch's patches; the rest later


@dataclass
class LiveTally:
    """What the stage did since the last report (sent to the worker, which exports it)."""

    lags: list[float] = field(default_factory=list)
    patched: int = 0  # patches that landed on a cached feed
    planned: int = 0
    failed: int = 0  # patches Redis refused (the re-rank still comes)
    announced: int = 0
    skipped: int = 0  # records that were not interactions this stage could decode
    batches: int = 0
    records: int = 0
    phase_s: dict[str, float] = field(default_factory=dict)  # seconds per phase, summed

    def lap(self, phase: str, started: float) -> float:
        """Charge the time since `started` to `phase`; returns now."""
        now = time.perf_counter()
        self.phase_s[phase] = self.phase_s.get(phase, 0.0) + now - started
        return now

    def plus(self, other: LiveTally) -> LiveTally:
        phases = {k: self.phase_s.get(k, 0.0) + other.phase_s.get(k, 0.0)
                  for k in self.phase_s.keys() | other.phase_s.keys()}
        return LiveTally([], self.patched + other.patched, self.planned + other.planned,
                         self.failed + other.failed, self.announced + other.announced,
                         self.skipped + other.skipped, self.batches + other.batches,
                         self.records + other.records, phases)

    def describe(self) -> str:
        means = ", ".join(f"{phase} {1000 * spent / self.batches:.1f}"
                          for phase, spent in self.phase_s.items()) if self.batches else "-"
        return (f"{self.records} records in {self.batches} batches, {self.planned} patches planned, "
                f"{self.patched} landed, {self.failed} failed, {self.announced} feeds announced, "
                f"{self.skipped} records skipped; mean ms a batch: {means}")


class _Landing(NamedTuple):
    """What a batch's patches did, from the thread that sent them."""

    lags: list[float] | None  # None: Redis failed
    announced: int
    patch_s: float
    announce_s: float


class LivePatchStage:
    """One batch: decode the interactions, read the rows they need, plan and apply the patches."""

    def __init__(self, *, rows: LiveRows, patcher: LivePatcher, codec: AvroCodec, params: PatchParams,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 related_reuse_ms: int = 0) -> None:
        self.rows = rows
        self.patcher = patcher
        self.codec = codec
        self.params = params
        self.clock_ms = clock_ms
        self.tally = LiveTally()
        # The rows are copy-on-write: a row's version is its object.
        self.related = RelatedCache(reuse_ms=related_reuse_ms)
        self._landing: asyncio.Future[_Landing] | None = None  # the last batch's patches

    async def process(self, records: Sequence[RawRecord]) -> None:
        # Always `self.tally`, never a local name for it: the reporter swaps it while this awaits.
        self.tally.batches += 1
        self.tally.records += len(records)
        started = time.perf_counter()
        stamps = [r.timestamp_ms for r in records if r.timestamp_ms is not None]
        if stamps:  # how long the batch's oldest record waited for it
            waited = max(0.0, (self.clock_ms() - min(stamps)) / 1000)
            self.tally.phase_s["wait"] = self.tally.phase_s.get("wait", 0.0) + waited
        timed = self._decode(records)
        started = self.tally.lap("decode", started)
        if not timed:
            return
        weights = self.params.action_weights
        keys = [node_key(NodeType.USER, item.event.user_id) for item in timed]
        keys += [node_key(NodeType.PIN, item.event.pin_id) for item in timed
                 if weights.get(item.event.action, 0.0) > 0]
        try:
            # Most batches find every row cached: no thread hop then (under load, each hop is a
            # wait for the scheduler as well).
            missing = self.rows.missing(keys)
            if missing:
                await asyncio.to_thread(self.rows.refresh, missing)
        except PinstreamError as exc:  # plan from what is cached; the re-rank still comes
            log.warning("live patches: graph rows not read (%s); planning from cached rows", exc)
        started = self.tally.lap("rows", started)
        planned = plan_patches(timed, self.rows.peek, self.params, self.clock_ms(), self.related)
        for item in timed:  # the next batch's patches must not lift these pins again
            weight = weights.get(item.event.action, 0.0)
            if weight:
                self.rows.note(node_key(NodeType.USER, item.event.user_id),
                               node_key(NodeType.PIN, item.event.pin_id), weight,
                               item.timestamp_ms or self.clock_ms())
        started = self.tally.lap("plan", started)
        # The previous batch's patches land before this batch's are sent: a user's patches stay
        # in order, and at most one Redis call is in flight.
        await self.drain()
        self.tally.lap("land", started)
        if not planned:
            return
        self.tally.planned += len(planned)
        # The Redis call and the announcements run in a thread while the next batch is fetched,
        # decoded and planned here: in a batch of a feed bench at 5,000/s, they were half of its
        # time (patch 7-24 ms, announcements 0-36 ms), and the next batch's records waited for
        # all of it before their own decoding began.
        landing = asyncio.ensure_future(asyncio.to_thread(self._patch, planned))
        landing.add_done_callback(functools.partial(self._landed, len(planned)))
        self._landing = landing

    async def drain(self) -> None:
        """Wait until the last batch's patches have landed (or failed), and are in the tally."""
        landing, self._landing = self._landing, None
        if landing is not None:
            await asyncio.wait([landing])  # its outcome goes to the tally by `_landed`

    def _patch(self, planned: Sequence[PlannedPatch]) -> _Landing:
        """In a thread: patch the feeds, then announce a few of the patched ones at once (as the
        stage always did: a re-rank coming a moment later would otherwise be what the announcement
        reads back); the rest from the reporter, between batches. Each costs ~1-2 ms (200 items
        read back and encoded): when a phase of traffic starts, every user's first patch is due at
        once, and announcing them all here held patches back by seconds."""
        started = time.perf_counter()
        lags = self.patcher.apply(planned)
        patched = time.perf_counter()
        announced = 0 if lags is None else self.patcher.announce_due(ANNOUNCE_IN_BATCH)
        return _Landing(lags, announced, patched - started, time.perf_counter() - patched)

    def _landed(self, planned: int, landing: asyncio.Future[_Landing]) -> None:
        """On the loop's thread, as the patches' thread finishes: its outcome into the tally
        (the reporter swaps the tally on this thread too, so nothing is counted twice or lost)."""
        if landing.cancelled():
            return
        error = landing.exception()
        if error is not None:
            log.warning("live feed patches failed (the re-rank will come): %r", error)
            self.tally.failed += planned
            return
        outcome = landing.result()
        phases = self.tally.phase_s
        phases["patch"] = phases.get("patch", 0.0) + outcome.patch_s
        phases["announce"] = phases.get("announce", 0.0) + outcome.announce_s
        if outcome.lags is None:  # Redis failed (logged)
            self.tally.failed += planned
            return
        self.tally.patched += len(outcome.lags)
        self.tally.lags.extend(outcome.lags)
        self.tally.announced += outcome.announced

    async def announce(self, limit: int = LIVE_ANNOUNCE_MAX) -> int:
        """Announce up to `limit` patched feeds that are due (the process's reporter calls it
        between batches too)."""
        announced = await asyncio.to_thread(self.patcher.announce_due, limit)
        self.tally.announced += announced
        return announced

    def take_tally(self) -> LiveTally:
        """What was done since the last call."""
        tally, self.tally = self.tally, LiveTally()
        return tally

    def forget_partition(self, stream: str) -> None:
        """Nothing is kept per partition (a redelivered patch lands again: harmless)."""

    def _decode(self, records: Sequence[RawRecord]) -> list[TimedInteraction]:
        timed = []
        for record in records:
            try:
                event = self.codec.decode_event(record.value or b"")
            except ContractError:
                self.tally.skipped += 1  # the interaction stage dead-letters it
                continue
            if isinstance(event, PinInteraction):
                timed.append(TimedInteraction(event, record.timestamp_ms))
            else:
                self.tally.skipped += 1
        return timed
