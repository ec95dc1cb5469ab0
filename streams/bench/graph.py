"""`pinstream bench graph`: sustained interactions/s through the graph processor (decode from Kafka
bytes, apply, HBase batch writes, GraphEdgeDelta produce, offset commit) beside a bare
confluent-kafka consume loop over the same topic, on a private topic prefix and HBase tables.

Rates are sustained: each path's clock starts at its first record, so the group join is left out.
"""

from __future__ import annotations

import cProfile
import pstats
import random
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import happybase
from confluent_kafka import Consumer, Message
from confluent_kafka.admin import AdminClient

from processors.graph import GraphConfig, GraphProcessor
from processors.graph_deltas import DeltaEncoder
from processors.graph_state import Position, position_of
from sinks.hbase import from_millis
from sinks.hbase_graph import GraphStore, RowWrite, StoredRow
from streams.admin import apply_topics
from streams.bench.report import Series, code_revision, machine_info, ratio
from streams.codec import AvroCodec
from streams.consumer import raw_record
from streams.errors import PinstreamError
from streams.events import InteractionAction, PinCreated, PinInteraction
from streams.metrics import freeze_heap
from streams.producer import EventProducer, PinProducer
from streams.ratelimit import RateLimiter
from streams.settings import Settings
from streams.topics import GRAPH_EDGES, PINS_INTERACTIONS
from streams.workload.population import build_world
from streams.workload.records import InteractionRecord
from streams.workload.sessions import iter_interactions

BARE = "bare confluent-kafka consume (ceiling)"
BARE_DECODED = "bare consume + decode to events"
OURS = "graph processor: decode+apply+HBase+deltas+commit"
PATHS = (BARE, BARE_DECODED, OURS)
STAGES = ("poll", "decode", "apply", "hbase read", "hbase write", "produce", "commit")
GOAL_RATE = 20_000.0
START = datetime(2026, 11, 1, tzinfo=UTC)
_DEADLINE_S = 600.0


def interaction_event(record: InteractionRecord) -> PinInteraction:
    """The contract event of a generated interaction (same id and time)."""
    return PinInteraction(event_id=uuid.UUID(record.event_id), event_time=from_millis(record.event_time_ms),
                          user_id=record.user_id, pin_id=record.pin_id,
                          action=InteractionAction(record.action.upper()), session_id=record.session_id,
                          board_id=record.board_id)


def make_interactions(count: int, seed: int) -> list[PinInteraction]:
    """`count` interactions of the planted-interest workload (about 12 per session)."""
    users = max(50, count // 60)
    world = build_world(seed, users=users, pins=max(500, count // 10), clusters=16)
    records = iter_interactions(world, start=START, days=7, sessions_per_user=6.0)
    events = [interaction_event(record) for record in islice(records, count)]
    if len(events) < count:
        raise PinstreamError(f"the workload yielded {len(events)} interactions, fewer than {count}")
    return events


@dataclass
class GraphBenchResult:
    interactions: int
    repeat: int
    batch: int
    rates: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PATHS})
    stage_seconds: list[dict[str, float]] = field(default_factory=list)  # ours, per repetition
    counts: dict[str, int] = field(default_factory=dict)  # ours, last repetition
    profile: list[tuple[str, float, float]] = field(default_factory=list)  # function, tottime s, share
    cores_busy: list[float] = field(default_factory=list)  # our process's CPU s per wall s, per run

    def series(self, path: str) -> Series:
        return Series(path, "interactions/s", tuple(self.rates[path]))

    def ratio(self, path: str = OURS, ceiling: str = BARE) -> float:
        return ratio(self.series(path), self.series(ceiling))

    def stage_shares(self) -> dict[str, float]:
        """Median share of our elapsed time spent in each stage."""
        shares: dict[str, float] = {}
        for stage in STAGES:
            values = sorted(run[stage] / sum(run.values()) for run in self.stage_seconds)
            shares[stage] = values[len(values) // 2]
        return shares

    def to_json(self, command: str) -> dict[str, Any]:
        return {
            "bench": "graph", "command": command, "commit": code_revision(),
            "interactions": self.interactions, "repeat": self.repeat, "batch": self.batch,
            "goal_rate": GOAL_RATE,
            "machine": machine_info(["confluent-kafka", "fastavro", "happybase", "thriftpy2"]),
            "paths": {p: {"rate": self.series(p).to_json(), "ratio_vs_bare": self.ratio(p),
                          "ratio_vs_bare_decoded": self.ratio(p, BARE_DECODED)} for p in PATHS},
            "process_cores_busy": self.cores_busy,
            "stage_seconds": self.stage_seconds, "stage_shares": self.stage_shares(),
            "counts": self.counts,
            "profile_top": [{"function": f, "tottime_s": t, "share": s} for f, t, s in self.profile],
        }


class _Clock:
    """Seconds per stage of our loop: `lap(stage)` charges the time since the previous lap."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now

    def move(self, seconds: float, source: str, target: str) -> None:
        self.seconds[source] -= seconds
        self.seconds[target] += seconds

    def restart(self) -> None:
        self._last = time.perf_counter()


def _consume_all(consumer: Consumer, count: int, batch: int,
                 handle: Callable[[list[Message]], None]) -> float:
    """Feed batches to `handle` until `count` records; returns when the first record arrived."""
    seen = 0
    started: float | None = None
    give_up = time.monotonic() + _DEADLINE_S
    while seen < count:
        messages = [m for m in consumer.consume(batch, 1.0) if m.error() is None]
        if not messages:
            if time.monotonic() > give_up:
                raise PinstreamError(f"consumed {seen}/{count} records in {_DEADLINE_S:.0f}s")
            continue
        if started is None:
            started = time.perf_counter()
        handle(messages)
        seen += len(messages)
    assert started is not None
    return started


def _bare(settings: Settings, topic: str, count: int, batch: int, decode: bool) -> float:
    codec = AvroCodec()
    consumer = Consumer(settings.kafka_consumer(f"bench-graph-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])

    def handle(messages: list[Message]) -> None:
        if decode:
            for message in messages:
                codec.decode_event(message.value() or b"")

    try:
        started = _consume_all(consumer, count, batch, handle)
        return time.perf_counter() - started
    finally:
        consumer.close()


_STREAMS: dict[tuple[str | None, int | None], str] = {}


def _position(message: Message) -> Position:
    if message.headers():  # a replayed copy names its original position in a header
        return position_of(raw_record(message))
    where = (message.topic(), message.partition())
    stream = _STREAMS.get(where)
    if stream is None:
        stream = _STREAMS[where] = f"{where[0]}/{where[1]}"
    return Position(stream, message.offset() or 0)


def _ours(settings: Settings, topic: str, count: int, batch: int, result: GraphBenchResult,
          profiler: cProfile.Profile | None) -> float:
    """The graph stage as a worker runs it, on fresh HBase tables: returns the elapsed seconds."""
    store = GraphStore.from_settings(settings, timeout_s=30.0)
    reads = _TimedReads(store)
    processor = GraphProcessor(reads, GraphConfig.from_settings(settings))
    deltas = EventProducer(settings, failures_only=True)  # as the worker's
    codec = deltas.codec
    delta_records = DeltaEncoder(codec)
    delta_topic = settings.topic(GRAPH_EDGES.name)
    consumer = Consumer(settings.kafka_consumer(f"bench-graph-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])
    clock = _Clock()
    writer = ThreadPoolExecutor(1, thread_name_prefix="bench-graph-flush")
    totals = {"batches": 0, "deltas": 0, "rows_written": 0, "duplicates": 0}

    def handle(messages: list[Message]) -> None:
        if not totals["batches"]:
            clock.restart()  # the wait for the group join and the first fetch is not ours
        totals["batches"] += 1
        clock.lap("poll")
        events: list[PinInteraction | PinCreated] = []
        for message in messages:
            event = codec.decode_event(message.value() or b"")
            if isinstance(event, PinInteraction | PinCreated):
                events.append(event)
        positions = [_position(message) for message in messages]
        clock.lap("decode")
        read_before = reads.seconds
        applied = processor.apply(events, positions)
        clock.lap("apply")
        clock.move(reads.seconds - read_before, "apply", "hbase read")
        # As the worker does: the HBase write runs in a thread beside the deltas' produce.
        flushing = writer.submit(processor.flush)
        for key, value in delta_records.records(applied.announcements):
            deltas.send_raw(delta_topic, key, value)
        totals["deltas"] += len(applied.announcements)
        totals["duplicates"] += applied.duplicates
        clock.lap("produce")
        totals["rows_written"] += flushing.result()
        clock.lap("hbase write")
        consumer.commit(asynchronous=True)  # after HBase acknowledged the batch's rows
        clock.lap("commit")

    try:
        if profiler is not None:
            profiler.enable()
        cpu = time.process_time()
        started = _consume_all(consumer, count, batch, handle)
        deltas.close(120)  # every delta acknowledged is part of the work measured
        clock.lap("produce")
        elapsed = time.perf_counter() - started
        # Includes the group join (seconds, mostly idle): a slight underestimate of the busy share.
        result.cores_busy.append((time.process_time() - cpu) / elapsed)
        if profiler is not None:
            profiler.disable()
    finally:
        writer.shutdown()
        consumer.close()
        store.close()
        _drop_tables(settings)
    result.stage_seconds.append(dict(clock.seconds))
    result.counts = totals | {"cached_cells": processor.cache.cells, "seen_ids": len(processor.seen),
                              "rows_read": reads.rows}
    return elapsed


class _TimedReads:
    """The graph store with its reads timed, so that the bench can tell HBase reads from apply."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store
        self.seconds = 0.0
        self.rows = 0

    def read_rows(self, keys: Iterable[str]) -> dict[str, StoredRow]:
        started = time.perf_counter()
        wanted = list(keys)
        rows = self.store.read_rows(wanted)
        self.seconds += time.perf_counter() - started
        self.rows += len(wanted)
        return rows

    def write_batch(self, rows: list[RowWrite]) -> None:
        self.store.write_batch(rows)


def _drop_tables(settings: Settings) -> None:
    conn = happybase.Connection(settings.hbase_host, settings.hbase_port, timeout=60_000,
                                table_prefix=settings.hbase_table_prefix)
    try:
        for name in conn.tables():
            conn.delete_table(name, disable=True)
    finally:
        conn.close()


def _produce(settings: Settings, events: list[PinInteraction]) -> None:
    producer = PinProducer(settings, rate_limiter=RateLimiter(0))
    for e in events:
        producer.interact(user_id=e.user_id, pin_id=e.pin_id, action=e.action, session_id=e.session_id,
                          board_id=e.board_id, event_id=e.event_id, event_time=e.event_time)
    producer.close(120)


def _top_functions(profiler: cProfile.Profile, limit: int = 15) -> list[tuple[str, float, float]]:
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]  # (file, line, name) -> (cc, nc, tt, ct, callers)
    total = sum(entry[2] for entry in entries.values()) or 1.0
    top = sorted(entries.items(), key=lambda item: -item[1][2])[:limit]
    return [(f"{name} ({file.rsplit('/', 2)[-1]}:{line})", entry[2], entry[2] / total)
            for (file, line, name), entry in top]


def run_graph_bench(settings: Settings, interactions: int, repeat: int, batch: int, seed: int, *,
                    profile: bool = False, progress: Callable[[str], None] | None = None) -> GraphBenchResult:
    """Produce the workload once into a private topic, then time each path over it `repeat` times
    (after one warm-up), paths in a shuffled order per repetition; cleans up topics and tables."""
    say = progress or (lambda _: None)
    prefix = f"bench{uuid.uuid4().hex[:10]}."
    scoped = settings.model_copy(update={"topic_prefix": prefix, "metrics_port": 0})
    topic = scoped.topic(PINS_INTERACTIONS.name)
    result = GraphBenchResult(interactions, repeat, batch)
    say(f"generating {interactions:,} interactions")
    events = make_interactions(interactions, seed)
    apply_topics(scoped, [PINS_INTERACTIONS, GRAPH_EDGES])
    # The collector as a worker sets it up (streams.app): with the defaults, collections that
    # scan the growing row cache cost about a quarter of the stage's CPU.
    freeze_heap()
    try:
        say(f"producing into {topic}")
        _produce(scoped, events)
        for rep in range(repeat + 1):  # repetition 0 warms up the broker, HBase and the clients
            order = list(PATHS)
            random.Random(seed + rep).shuffle(order)
            for path in order:
                say(f"repetition {rep}/{repeat}: {path}")
                if path == OURS:
                    seconds = _ours(_fresh_tables(scoped), topic, interactions, batch, result, None)
                else:
                    seconds = _bare(scoped, topic, interactions, batch, decode=path == BARE_DECODED)
                if rep:
                    result.rates[path].append(interactions / seconds)
        del result.stage_seconds[0], result.cores_busy[0]  # the warm-up's
        if profile:
            # A run of its own: the profiler slows it down, so it counts in no figure but this one.
            say("profiling one more run of the graph processor")
            profiler = cProfile.Profile()
            _ours(_fresh_tables(scoped), topic, interactions, batch, result, profiler)
            result.stage_seconds.pop()
            result.cores_busy.pop()
            result.profile = _top_functions(profiler)
    finally:
        admin = AdminClient(scoped.kafka_common())
        topics = [topic, scoped.topic(GRAPH_EDGES.name)]
        for future in admin.delete_topics(topics, operation_timeout=60).values():
            future.result(timeout=60)
    return result


def _fresh_tables(settings: Settings) -> Settings:
    return settings.model_copy(update={"hbase_table_prefix": f"bench{uuid.uuid4().hex[:10]}"})
