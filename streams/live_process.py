"""The live patch process: started, fed and watched by the worker (`LivePatchProcess`), and its
own main (started by the worker, never by hand).

The worker talks to it over the child's stdin and stdout, one JSON object per line:
- in: `{"settings": ..., "log_level": ...}` first (the worker's, secrets included: the pipe is
  private); then `{"rows": [[row, {column: [weight, updated_ms]}, [deleted column, ...]], ...]}`
  for the user and pin rows the interaction stage wrote, or `{"forget": true}` when pushes had
  to be dropped;
- out: `{"report": ...}` about twice a second: what the process did (its patch lags are observed
  in the worker's own `pinstream_feed_live_lag_seconds`), its partitions and its pools.
Its logs go to the worker's stderr, at the worker's level. Closing its stdin stops it (after the
batch in flight).

Entry point only: nothing imports it but the worker runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from prometheus_client import Counter, Gauge

from processors.feed import FeedParams
from processors.feed_patch import PatchParams
from processors.live_patches import FEED_LIVE_LAG, LIVE_ANNOUNCEMENTS, LivePatcher
from processors.live_rows import LiveRows
from processors.live_stage import LivePatchStage, LiveTally
from sinks.hbase_graph import NODE_PREFIXES, Edge, GraphStore, RowWrite
from sinks.pool_metrics import POOL_EXHAUSTED, POOL_IDLE, POOL_IN_USE, POOL_LEAKS, POOL_MAX
from sinks.redis import FeedCache
from streams.events import NodeType
from streams.interaction_consumer import InteractionConsumer
from streams.metrics import REGISTRY, freeze_heap
from streams.producer import EventProducer
from streams.registry import build_codec
from streams.settings import Settings
from streams.topics import PINS_INTERACTIONS

log = logging.getLogger(__name__)

FORGET = b'{"forget": true}\n'
CHILD_COMMAND = "from streams.live_process import main; main()"
PUSH_QUEUE = 256  # row-write batches waiting for the child's pipe (bounded: a full queue -> FORGET)
REPORT_EVERY_S = 0.5
# Patched feeds announced per report round (50/s: a user is announced at most every 30 s by
# default, so 1,500 users patching all the time), beside the few each batch announces.
ANNOUNCE_PER_REPORT = 25
# The live group's commits only say where a restarted process starts (a patch lost or applied
# twice is corrected by the re-rank): one a second, not one per batch (50-100 a second at 5,000
# interactions/s; 200 commits a second cost a one-broker Kafka ~0.1 cores).
LIVE_COMMIT_INTERVAL_S = 1.0
SUMMARY_EVERY_S = 30.0  # a log line of what the process did, when it did anything
_RESTART_MAX_S = 30.0
_PUSHED_PREFIXES = (NODE_PREFIXES[NodeType.USER] + ":", NODE_PREFIXES[NodeType.PIN] + ":")

LIVE_PATCHES = Counter("pinstream_feed_live_patches_total",
                       "Live patches by outcome: patched (a cached feed changed), unpatched (no "
                       "feed cached), failed (Redis refused them).", ["outcome"], registry=REGISTRY)
for _outcome in ("patched", "unpatched", "failed"):
    LIVE_PATCHES.labels(_outcome)
LIVE_SKIPPED = Counter("pinstream_feed_live_skipped_records_total",
                       "Records the live patch process skipped (not an interaction it could decode).",
                       registry=REGISTRY)
LIVE_RESTARTS = Counter("pinstream_feed_live_process_restarts_total",
                        "Times the worker started its live patch process again after it ended.",
                        registry=REGISTRY)
LIVE_PUSHES_LOST = Counter("pinstream_feed_live_pushes_lost_total",
                           "Row-write batches not pushed to the live patch process (queue full): it "
                           "drops its rows and reads them again.", registry=REGISTRY)
LIVE_CPU = Counter("pinstream_feed_live_process_cpu_seconds",
                   "CPU seconds (every thread) of the live patch process.", registry=REGISTRY)
LIVE_ROWS_CELLS = Gauge("pinstream_feed_live_rows_cells", "Graph cells the live patch process holds.",
                        registry=REGISTRY)
_POOL_GAUGES: dict[str, Gauge] = {"pinstream_pool_in_use": POOL_IN_USE, "pinstream_pool_idle": POOL_IDLE,
                                  "pinstream_pool_max": POOL_MAX}
_POOL_COUNTERS: dict[str, Counter] = {"pinstream_pool_exhausted": POOL_EXHAUSTED,
                                      "pinstream_pool_leaks": POOL_LEAKS}


@dataclass
class LiveReport:
    tally: LiveTally
    assigned: int  # interaction partitions the process holds
    rows_cells: int
    pools: list[tuple[str, str, float]] = field(default_factory=list)  # (family, pool, value)
    cpu_s: float = 0.0  # the process's CPU seconds so far

    def to_line(self) -> bytes:
        return json.dumps({"report": dataclasses.asdict(self)}).encode() + b"\n"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LiveReport:
        return cls(LiveTally(**data["tally"]), int(data["assigned"]), int(data["rows_cells"]),
                   [(str(f), str(p), float(v)) for f, p, v in data["pools"]], float(data["cpu_s"]))


def rows_line(writes: Sequence[RowWrite]) -> bytes | None:
    """The user and pin rows among `writes`, as one line for the process (None: none of them)."""
    rows = [[w.row, {column: [edge.weight, edge.updated_ms] for column, edge in w.edges.items()},
             list(w.deleted)] for w in writes if w.row.startswith(_PUSHED_PREFIXES)]
    return json.dumps({"rows": rows}).encode() + b"\n" if rows else None


def parse_rows(data: dict[str, Any]) -> list[RowWrite]:
    return [RowWrite(row, {column: Edge(float(w), int(ms)) for column, (w, ms) in edges.items()},
                     tuple(deleted)) for row, edges, deleted in data["rows"]]


# --- the worker's side -------------------------------------------------------------------------


class LivePatchProcess:
    """Starts the live patch process, pushes it row writes, exports its reports, and starts it
    again (after a growing pause) when it ends without being asked to."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.restarts = 0
        self.assigned = 0
        self.reports = 0
        # Whether the last report's batches started late: their oldest records waited more than
        # feed_rerank_behind_ms on average. The worker's re-ranks then keep to their smaller share.
        self.behind = False
        self._behind_s = settings.feed_rerank_behind_ms / 1000
        self._pushes: queue.Queue[bytes] = queue.Queue(PUSH_QUEUE)
        self._lost = False
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._counted: dict[tuple[str, str], float] = {}  # the child's counters seen so far
        self._watcher: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        """The process holds interaction partitions (it patches what comes from now on)."""
        return self.assigned > 0 and self.alive

    @property
    def alive(self) -> bool:
        return self._child is not None and self._child.poll() is None

    def start(self) -> None:
        self._watcher = threading.Thread(target=self._watch, name="live-patch-watcher", daemon=True)
        self._watcher.start()

    def push(self, writes: Sequence[RowWrite]) -> None:
        """Called after each HBase write of the graph stage (never blocks it)."""
        line = rows_line(writes)
        if line is None:
            return
        try:
            if self._lost:
                self._pushes.put_nowait(FORGET)
                self._lost = False
            self._pushes.put_nowait(line)
        except queue.Full:
            self._lost = True
            LIVE_PUSHES_LOST.inc()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stopping.set()  # the feeder closes the child's stdin: it stops after its batch
        if self._watcher is not None:
            self._watcher.join(timeout_s)
        self._kill()
        if self._child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._child.wait(5)

    def health(self) -> dict[str, Any]:
        return {"pid": self._child.pid if self._child else None, "alive": self.alive,
                "partitions": self.assigned, "restarts": self.restarts, "reports": self.reports,
                "behind": self.behind}

    # --- internals --------------------------------------------------------------------------------

    def _watch(self) -> None:
        pause = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            child = subprocess.Popen([sys.executable, "-c", CHILD_COMMAND],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self._child = child
            assert child.stdin is not None and child.stdout is not None
            feeder = threading.Thread(target=self._feed, args=(child, child.stdin),
                                      name="live-patch-feeder", daemon=True)
            feeder.start()
            self._read(child.stdout)
            code = child.wait()
            self.assigned = 0
            if self._stopping.is_set():
                return
            log.error("live patch process exited with %s; starting it again in %.0f s", code, pause)
            LIVE_RESTARTS.inc()
            self.restarts += 1
            self._stopping.wait(pause)
            pause = 1.0 if time.monotonic() - started > 5 * _RESTART_MAX_S else min(pause * 2, _RESTART_MAX_S)

    def _feed(self, child: subprocess.Popen[bytes], stdin: IO[bytes]) -> None:
        """Settings first, then the pushes, until the child ends or the worker stops (then the
        child's stdin is closed: that stops it)."""
        try:
            first = {"settings": self.settings.for_child(),
                     "log_level": logging.getLogger().getEffectiveLevel()}  # the worker's --loglevel
            stdin.write(json.dumps(first).encode() + b"\n")
            stdin.flush()
            while not self._stopping.is_set() and child.poll() is None:
                try:
                    item = self._pushes.get(timeout=0.5)
                except queue.Empty:
                    continue
                stdin.write(item)
                if self._pushes.empty():
                    stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the child ended: the watcher starts a new one
        finally:
            with contextlib.suppress(BrokenPipeError, OSError, ValueError):
                stdin.close()

    def _read(self, stdout: IO[bytes]) -> None:
        for line in stdout:
            try:
                report = LiveReport.from_json(json.loads(line)["report"])
            except (ValueError, KeyError, TypeError) as exc:  # a broken stream: start it again
                log.error("live patch process: unreadable report (%r); stopping it", exc)
                self._kill()
                return
            self._export(report)

    def _kill(self) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()

    def _export(self, report: LiveReport) -> None:
        self.reports += 1
        self.assigned = report.assigned
        tally = report.tally
        # No batch in half a second: nothing waited.
        self.behind = bool(tally.batches) and tally.phase_s.get("wait", 0.0) / tally.batches > self._behind_s
        for lag in tally.lags:
            FEED_LIVE_LAG.observe(lag)
        LIVE_ANNOUNCEMENTS.inc(tally.announced)
        LIVE_PATCHES.labels("patched").inc(tally.patched)
        LIVE_PATCHES.labels("unpatched").inc(max(0, tally.planned - tally.patched - tally.failed))
        LIVE_PATCHES.labels("failed").inc(tally.failed)
        LIVE_SKIPPED.inc(tally.skipped)
        LIVE_ROWS_CELLS.set(report.rows_cells)
        LIVE_CPU.inc(self._growth(("cpu", ""), report.cpu_s))
        for family, pool, value in report.pools:
            label = f"{pool}@live"
            if family in _POOL_GAUGES:
                _POOL_GAUGES[family].labels(label).set(value)
            elif family in _POOL_COUNTERS:
                _POOL_COUNTERS[family].labels(label).inc(self._growth((family, pool), value))

    def _growth(self, key: tuple[str, str], total: float) -> float:
        """How much a total the process reports grew since its last report (all of it when the
        total fell: a new process counts from zero)."""
        seen = self._counted.get(key, 0.0)
        self._counted[key] = total
        return total - seen if total >= seen else total


# --- the process's side ----------------------------------------------------------------------------


def pool_samples() -> list[tuple[str, str, float]]:
    """This process's pool gauges and counter totals, by family and pool name (only those
    metrics are collected: the whole registry, twice a second, cost a few % of the process)."""
    out = []
    for metric in (*_POOL_GAUGES.values(), *_POOL_COUNTERS.values()):
        for family in metric.collect():
            for sample in family.samples:
                if not sample.name.endswith("_created"):
                    out.append((family.name, sample.labels.get("pool", ""), sample.value))
    return out


def _receive(stdin: IO[bytes], rows: LiveRows, stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
    """Apply the worker's pushes until its end of the pipe closes, then ask the loop to stop."""
    try:
        for line in stdin:
            data = json.loads(line)
            if data.get("forget"):
                rows.forget()
            else:
                rows.written(parse_rows(data))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("unreadable push from the worker (%r): stopping", exc)
    finally:
        loop.call_soon_threadsafe(stop.set)


async def serve(settings: Settings, stdin: IO[bytes], out: IO[bytes]) -> None:
    codec = build_codec(settings)
    store = GraphStore.from_settings(settings)
    cache = FeedCache.from_settings(settings)
    producer = EventProducer(settings, codec=codec, linger_ms=settings.worker_producer_linger_ms)
    params = PatchParams.from_settings(settings)
    rows = LiveRows(store, max_cells=settings.feed_live_rows_max_cells, ttl_s=settings.feed_live_rows_ttl_s,
                    half_life_ms=params.half_life_ms)
    patcher = LivePatcher(cache, producer, model=FeedParams.from_settings(settings).model,
                          announce_interval_s=settings.feed_live_announce_interval_s)
    stage = LivePatchStage(rows=rows, patcher=patcher, codec=codec, params=params,
                           related_reuse_ms=settings.feed_live_related_reuse_ms)
    stop = asyncio.Event()
    threading.Thread(target=_receive, args=(stdin, rows, stop, asyncio.get_running_loop()),
                     name="live-patch-receiver", daemon=True).start()
    # The collector as the worker sets it up: with the defaults, young collections every 700
    # allocations and full ones scanning the row cache cost a large share of the decode.
    freeze_heap()
    consumer = await asyncio.to_thread(
        InteractionConsumer, settings, stage, group_id=settings.live_group_id, legacy_group="",
        topics=[settings.topic(PINS_INTERACTIONS.name)], commit_interval_s=LIVE_COMMIT_INTERVAL_S,
        # A new group starts at the newest interactions: patching feeds with old ones is moot.
        consumer_config={"auto.offset.reset": "latest"})

    async def report() -> None:
        summary = LiveTally()
        logged = time.monotonic()
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            await stage.announce(ANNOUNCE_PER_REPORT)
            producer.poll(0)
            tally = stage.take_tally()
            out.write(LiveReport(tally, consumer.assigned, rows.cells, pool_samples(),
                                 time.process_time()).to_line())
            out.flush()
            summary = summary.plus(tally)
            if summary.records and time.monotonic() - logged >= SUMMARY_EVERY_S:
                log.info("%s; rows: %d cached, %d cells, %d read, %d pushes applied; related pins: "
                         "%d computed, %d reused", summary.describe(), len(rows), rows.cells, rows.reads,
                         rows.pushes, stage.related.misses, stage.related.hits)
                summary, logged = LiveTally(), time.monotonic()

    async def stop_when_asked() -> None:
        await stop.wait()
        consumer.stop()

    reporter = asyncio.create_task(report())
    stopper = asyncio.create_task(stop_when_asked())
    try:
        await consumer.run()
    finally:
        for task in (reporter, stopper):
            task.cancel()
        await stage.drain()  # the last batch's patches and announcements
        await asyncio.to_thread(producer.close)
        cache.close()
        store.close()


def main() -> None:
    # stdout carries the reports: anything else printed goes to stderr, with the logs.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    stdin = sys.stdin.buffer
    first = json.loads(stdin.readline())
    settings = Settings(**first["settings"])
    logging.basicConfig(level=int(first.get("log_level", logging.INFO)), stream=sys.stderr,
                        format=f"[%(asctime)s] [{os.getpid()}] [%(levelname)s] live patches: %(message)s")
    log.info("started (group %s)", settings.live_group_id)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings, stdin, out))
    log.info("stopped")

