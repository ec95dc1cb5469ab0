"""HBase pin store bench: batch write latency of `PinStore` beside bare happybase doing the same
puts on the same server, and the connection pool's own cost per borrow.

Three write paths per batch (metadata row + 1280-d embedding row per pin), taking turns in every
repetition so that load from other processes lands on all of them:
- ours: `write_pins` + `write_embeddings` (pool borrow, encoding, grouping, metrics, translation);
- bare put loop: one `table.put(..., timestamp=event time)` per row, cells encoded beforehand;
- bare batch: `table.batch(timestamp=...)` per distinct event time, cells encoded beforehand: the
  same round trips as ours, so the ceiling of the library.
"""

from __future__ import annotations

import argparse
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import happybase
import numpy as np
from rich.console import Console

from sinks.hbase import PINS_TABLE, PinStore, embedding_cells, millis, pin_cells
from sinks.pool import ConnectionPool, PoolConfig
from streams.bench.report import (
    Series,
    code_revision,
    default_result_path,
    machine_info,
    percentile,
    print_table,
    ratio,
    timed,
    write_json,
)
from streams.events import PinCreated, PinEmbedding
from streams.settings import Settings, load_settings

DIM = 1280
OURS = "PinStore"
BARE_LOOP = "bare happybase put loop"
BARE_BATCH = "bare happybase batch (ceiling)"
PATHS = (OURS, BARE_LOOP, BARE_BATCH)
TIME_MODES = ("distinct", "shared")  # one event time per pin (a live stream) / one per batch (bulk)

Cells = dict[bytes, bytes]


@dataclass(frozen=True, slots=True)
class WriteCase:
    """Latencies (seconds) of one batch size and time mode, per path, paired by repetition."""

    size: int
    time_mode: str
    seconds: dict[str, Series]

    def p(self, path: str, q: float) -> float:
        return percentile(self.seconds[path].values, q)


@dataclass(frozen=True, slots=True)
class BorrowCost:
    label: str
    micros: float  # per borrow+return, median of repetitions


def make_batch(size: int, time_mode: str, rng: np.random.Generator, start: datetime
               ) -> tuple[list[PinCreated], list[PinEmbedding]]:
    tag = uuid.uuid4().hex[:8]
    pins = [PinCreated(pin_id=f"bench-{tag}-{i}", user_id=f"u{i % 97}", board_id=f"b{i % 13}",
                       title=f"pin {i}", description="a bench pin with an ordinary description",
                       link="https://example.com/p", tags=("bench", "photo"), image_ref=f"sha256:{tag}{i}",
                       event_time=start + (timedelta(milliseconds=i) if time_mode == "distinct" else
                                           timedelta(0)))
            for i in range(size)]
    vectors = rng.standard_normal((size, DIM), dtype=np.float32)
    embeddings = [PinEmbedding(pin_id=pin.pin_id, source_event_id=pin.event_id, model_id="bench",
                               model_version="1", vector=tuple(vectors[i].tolist()),
                               event_time=pin.event_time)
                  for i, pin in enumerate(pins)]
    return pins, embeddings


def _encoded(pins: Sequence[PinCreated], embeddings: Sequence[PinEmbedding]
             ) -> list[tuple[bytes, int, Cells]]:
    rows = [(p.pin_id.encode(), millis(p.event_time), pin_cells(p)) for p in pins]
    return rows + [(e.pin_id.encode(), millis(e.event_time), embedding_cells(e)) for e in embeddings]


def write_ours(store: PinStore, pins: Sequence[PinCreated], embeddings: Sequence[PinEmbedding]) -> None:
    store.write_pins(pins)
    store.write_embeddings(embeddings)


def bare_loop(table: Any, rows: Sequence[tuple[bytes, int, Cells]]) -> None:
    for key, stamp, cells in rows:
        table.put(key, cells, timestamp=stamp)


def bare_batch(table: Any, rows: Sequence[tuple[bytes, int, Cells]], cells_per_rpc: int) -> None:
    # Metadata and embeddings are separate calls in ours too; keep that split here.
    for part in (rows[: len(rows) // 2], rows[len(rows) // 2:]):
        by_stamp: dict[int, list[tuple[bytes, Cells]]] = defaultdict(list)
        for key, stamp, cells in part:
            by_stamp[stamp].append((key, cells))
        for stamp, stamped in by_stamp.items():
            batch = table.batch(timestamp=stamp, batch_size=cells_per_rpc)
            for key, cells in stamped:
                batch.put(key, cells)
            batch.send()


def run_write_bench(settings: Settings, sizes: Sequence[int], repeat: int, seed: int = 7,
                    progress: Callable[[str], None] = lambda message: None) -> list[WriteCase]:
    """Paired latencies of the three paths for each batch size and time mode, on fresh rows."""
    store = PinStore.from_settings(settings)
    raw = happybase.Connection(settings.hbase_host, settings.hbase_port, timeout=30_000,
                               table_prefix=settings.hbase_table_prefix)
    table = raw.table(PINS_TABLE)
    rng = np.random.default_rng(seed)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    cases = []
    try:
        for size in sizes:
            for time_mode in TIME_MODES:
                values: dict[str, list[float]] = {path: [] for path in PATHS}
                for rep in range(repeat + 1):  # the first repetition warms up and is dropped
                    batches = {path: make_batch(size, time_mode, rng, start + timedelta(seconds=rep))
                               for path in PATHS}
                    encoded = {path: _encoded(*batches[path]) for path in (BARE_LOOP, BARE_BATCH)}
                    cells_per_rpc = store.rows_per_rpc * max(len(c) for _, _, c in encoded[BARE_BATCH])
                    runs: dict[str, Callable[[], object]] = {
                        OURS: partial(write_ours, store, *batches[OURS]),
                        BARE_LOOP: partial(bare_loop, table, encoded[BARE_LOOP]),
                        BARE_BATCH: partial(bare_batch, table, encoded[BARE_BATCH], cells_per_rpc),
                    }
                    order = PATHS if rep % 2 else tuple(reversed(PATHS))
                    for path in order:
                        elapsed = timed(runs[path])
                        if rep:
                            values[path].append(elapsed)
                cases.append(WriteCase(size, time_mode, {
                    path: Series(path, "s", tuple(v)) for path, v in values.items()}))
                progress(f"batch of {size}, {time_mode} event times: done")
    finally:
        raw.close()
        store.close()
    return cases


def case_ratio(case: WriteCase, path: str, ceiling: str) -> float:
    return ratio(case.seconds[path], case.seconds[ceiling])


def run_borrow_bench(borrows: int = 100_000, repeat: int = 5) -> list[BorrowCost]:
    """Microseconds per borrow+return of a pooled no-op connection, by pool option."""

    def cost(label: str, config: PoolConfig, check: Callable[[object], object] | None) -> BorrowCost:
        pool: ConnectionPool[object] = ConnectionPool(config, create=object, close=lambda conn: None,
                                                      check=check)

        def loop() -> None:
            for _ in range(borrows):
                with pool.connection():
                    pass

        loop()
        runs = [timed(loop) / borrows * 1e6 for _ in range(repeat)]
        pool.close()
        return BorrowCost(label, sorted(runs)[len(runs) // 2])

    def empty_loop() -> None:
        for _ in range(borrows):
            pass

    base = sorted(timed(empty_loop) / borrows * 1e6 for _ in range(repeat))[repeat // 2]
    name = f"bench-{uuid.uuid4().hex[:6]}"
    results = [
        cost("borrow+return, call site captured (default)", PoolConfig(name + "a", "bench"), None),
        cost("borrow+return, no call site", PoolConfig(name + "b", "bench", capture_call_sites=False),
             None),
        cost("borrow+return, health check on every borrow (no-op check)",
             PoolConfig(name + "c", "bench", check_idle_after_s=0.0), lambda conn: True),
    ]
    return [BorrowCost(r.label, r.micros - base) for r in results]


def health_check_cost(settings: Settings, calls: int = 50) -> float:
    """Median milliseconds of the health check's round trip (listing tables) on the real server."""
    raw = happybase.Connection(settings.hbase_host, settings.hbase_port, timeout=10_000)
    try:
        raw.tables()
        runs = sorted(timed(raw.tables) for _ in range(calls))
    finally:
        raw.close()
    return runs[len(runs) // 2] * 1e3


def drop_tables(settings: Settings) -> None:
    raw = happybase.Connection(settings.hbase_host, settings.hbase_port, timeout=30_000,
                               table_prefix=settings.hbase_table_prefix)
    try:
        for name in raw.tables():
            raw.delete_table(name, disable=True)
    finally:
        raw.close()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m streams.bench.pinstore`: print the tables and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100", help="pins per batch, comma-separated")
    parser.add_argument("--repeat", type=int, default=30, help="measured batches per case")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    settings = load_settings().model_copy(update={"hbase_table_prefix": f"bench{uuid.uuid4().hex[:8]}"})
    console = Console(width=150)
    try:
        cases = run_write_bench(settings, sizes, args.repeat, progress=console.print)
    finally:
        drop_tables(settings)
    borrows = run_borrow_bench()
    check_ms = health_check_cost(settings)
    command = f"python -m streams.bench.pinstore --sizes {args.sizes} --repeat {args.repeat}"
    print_table(console, f"Batch write latency, ms (median of paired ratios over {args.repeat} batches)",
                ["pins/batch, event times", *(f"{p} p50" for p in PATHS), f"{OURS} p99",
                 f"{BARE_LOOP} p99", "vs loop", "vs batch"],
                [[f"{c.size}, {c.time_mode}", *(f"{c.p(p, 50) * 1e3:.1f}" for p in PATHS),
                  f"{c.p(OURS, 99) * 1e3:.1f}", f"{c.p(BARE_LOOP, 99) * 1e3:.1f}",
                  f"{case_ratio(c, OURS, BARE_LOOP):.2f}", f"{case_ratio(c, OURS, BARE_BATCH):.2f}"]
                 for c in cases],
                caption=f"{command}\n'vs' = our latency / theirs (below 1: we are faster)")
    print_table(console, "Pool cost per borrow (no-op connection, loop overhead removed)",
                ["path", "us"], [[b.label, f"{b.micros:.2f}"] for b in borrows],
                caption=f"health check round trip on HBase (listing tables): {check_ms:.2f} ms")
    payload = {
        "bench": "pinstore", "command": command, "commit": code_revision(),
        "machine": machine_info(["happybase", "thriftpy2", "numpy"]),
        "writes": [{"size": c.size, "time_mode": c.time_mode,
                    "seconds": {p: s.to_json() for p, s in c.seconds.items()},
                    "p50_ms": {p: c.p(p, 50) * 1e3 for p in PATHS},
                    "p99_ms": {p: c.p(p, 99) * 1e3 for p in PATHS},
                    "ratio_vs_loop": case_ratio(c, OURS, BARE_LOOP),
                    "ratio_vs_batch": case_ratio(c, OURS, BARE_BATCH)} for c in cases],
        "borrow_us": {b.label: b.micros for b in borrows},
        "health_check_ms": check_ms,
    }
    console.print(f"wrote {write_json(args.out or default_result_path('pinstore'), payload)}")


if __name__ == "__main__":
    main()
