"""`pinstream bench feed`: interaction -> feed refreshed in Redis latency through a real worker at
sustained interaction rates, and feed read latency (HTTP and the Redis read), each beside the bare
library doing the same work in the same run (confluent-kafka produce -> consume, redis ZREVRANGE).

The worker stamps each FeedUpdated with the Kafka timestamp of the oldest interaction the refresh
covers (`HEADER_SOURCE_TIMESTAMP`), and publishes it after the feed is in Redis: the FeedUpdated
record's own timestamp minus that stamp is the refresh latency of the longest-waiting interaction.
Full re-ranks (coalesced per user) and announcements of live-patched feeds (coalesced per user
per announcement interval) are told apart by `HEADER_FEED_CHANGE` and timed separately.

A live patch (one batch's engagements and hides, at once) is timed where it lands: the worker
observes, right after Redis applied it, the Kafka timestamp of the oldest interaction it covers
(`pinstream_feed_live_lag_seconds`), and the bench reads that histogram's buckets before and after
each rate (percentiles exact to the bucket).
"""

from __future__ import annotations

import functools
import os
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from sinks.redis import FeedCache
from streams.bench.graph import interaction_event
from streams.bench.report import code_revision, machine_info, percentile, timed
from streams.campaigns.sampling import wait_caught_up
from streams.codec import AvroCodec
from streams.consumer import raw_record
from streams.errors import PinstreamError
from streams.events import PinInteraction
from streams.localworker import LocalRedis, LocalWorker, free_port
from streams.offsets import partitions_of, plain_consumer
from streams.producer import EventProducer
from streams.stack import ages as stack_ages
from streams.stack import cpu_seconds as stack_cpu_seconds
from streams.stack.process import process_cpu_s
from streams.topics import FEEDS_UPDATED, HEADER_FEED_CHANGE, HEADER_SOURCE_TIMESTAMP, PINS_INTERACTIONS
from streams.workload.population import build_world
from streams.workload.records import InteractionRecord
from streams.workload.sessions import iter_interactions

GOAL_P99_S = 0.150
READ_PATHS = ("GET /feed/{user}", "FeedCache.read_feed", "bare redis ZREVRANGE")
START = datetime(2026, 1, 5, tzinfo=UTC)
Progress = Callable[[str], None]
_QUIET_S = 3.0  # no FeedUpdated for this long: the worker has caught up
# Writes to an HBase started less than this long ago were 2-4x slower in our runs (the 1,000/s
# tail follows them): the bench says so beside its figures.
YOUNG_HBASE_S = 600.0
# A phase steps from idle to its rate at once: most of its live-patch tail comes in its first
# seconds (rows read for the first time, every user's first patch announced, the worker's and the
# servers' bursts). The bench also gives the patches from this far into the phase on (the worker
# takes in the patch lags twice a second: the boundary is that fuzzy).
SETTLED_AFTER_S = 3.0


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50/p99/max and the count of a list of seconds (empty: only the count)."""
    if not values:
        return {"count": 0.0}
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values),
            "count": float(len(values))}


@dataclass
class RatePhase:
    """One sustained rate: what was sent, the refresh latencies seen, how long the worker took to
    catch up after the last interaction, and the bare produce -> consume latency at that rate."""

    rate: float
    duration_s: float
    sent: int = 0
    achieved_rate: float = 0.0
    refresh_s: list[float] = field(default_factory=list)  # full re-ranks
    live_s: list[float] = field(default_factory=list)  # live-patched feeds announced (coalesced)
    # Live patches applied in Redis, from the worker's lag histogram: count, p50, p99 (seconds).
    live_redis: dict[str, float] = field(default_factory=dict)
    live_redis_settled: dict[str, float] = field(default_factory=dict)  # from SETTLED_AFTER_S on
    users_refreshed: int = 0
    drain_s: float = 0.0
    fallbacks: dict[str, int] = field(default_factory=dict)
    bare_kafka_s: list[float] = field(default_factory=list)
    # The worker's interaction batches during the phase: count, mean records, mean ms per phase.
    batches: dict[str, float] = field(default_factory=dict)
    # Mean cores each process used while the phase's interactions were being sent, and the total.
    cores: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"rate": self.rate, "duration_s": self.duration_s, "sent": self.sent,
                "achieved_rate": self.achieved_rate, "refresh_latency_s": summary(self.refresh_s),
                "live_latency_s": summary(self.live_s), "live_redis_latency_s": self.live_redis,
                "live_redis_latency_after_first_s": {"after_s": SETTLED_AFTER_S} | self.live_redis_settled,
                "users_refreshed": self.users_refreshed, "drain_s": self.drain_s,
                "fallbacks": self.fallbacks, "bare_kafka_latency_s": summary(self.bare_kafka_s),
                "interaction_batches": self.batches, "cores_while_sending": self.cores}


@dataclass
class FeedBenchResult:
    phases: list[RatePhase] = field(default_factory=list)
    reads: dict[str, list[float]] = field(default_factory=dict)  # path -> seconds per read
    warmup: int = 0
    users: int = 0
    load: list[tuple[float, float, float]] = field(default_factory=list)
    feed_stage_ms: dict[str, float] = field(default_factory=dict)  # worker's mean per stage
    graph_rows: dict[str, float] = field(default_factory=dict)  # rows feeds read, by source
    stack_age_s: dict[str, float] = field(default_factory=dict)  # local services, at the start

    def young_hbase(self) -> float | None:
        """HBase's age at the start when it was younger than YOUNG_HBASE_S (its writes are slow
        for minutes after a start), else None."""
        age = self.stack_age_s.get("hbase")
        return age if age is not None and age < YOUNG_HBASE_S else None

    def to_json(self, command: str) -> dict[str, Any]:
        return {"bench": "feed", "command": command, "commit": code_revision(),
                "goal_p99_s": GOAL_P99_S, "warmup_interactions": self.warmup, "users": self.users,
                "phases": [p.to_json() for p in self.phases],
                "reads_s": {path: summary(v) for path, v in self.reads.items()},
                "load_average": self.load, "worker_feed_stage_mean_ms": self.feed_stage_ms,
                "feed_graph_rows_by_source": self.graph_rows, "stack_age_s": self.stack_age_s,
                "machine": machine_info(["confluent-kafka", "redis", "happybase", "faust-streaming"])}


def workload(count: int, users: int, seed: int) -> Iterator[InteractionRecord]:
    """The planted-interest workload, in event-time order (sessions arrive as bursts)."""
    world = build_world(seed, users=users, pins=max(500, users * 5), clusters=16)
    yield from iter_interactions(world, start=START, days=7, sessions_per_user=count / users / 10)


def paced(count: int, rate: float) -> Iterator[int]:
    """Yields 0..count-1, each no earlier than start + i/rate (open loop: a slow consumer of the
    records never slows the sending down)."""
    started = time.monotonic()
    for i in range(count):
        delay = started + i / rate - time.monotonic()
        if delay > 0.001:
            time.sleep(delay)
        yield i


class FeedFollower:
    """Follows feeds.updated.v1 from its end in a thread: refresh latency per FeedUpdated."""

    def __init__(self, worker: LocalWorker) -> None:
        # arrival, latency, user, fallbacks, live (a patch, not a re-rank)
        self.records: list[tuple[float, float, str, tuple[str, ...], bool]] = []
        self.last_arrival = time.monotonic()
        settings = worker.settings
        topic = settings.topic(FEEDS_UPDATED.name)
        self._codec_settings = settings
        self._consumer = plain_consumer(settings, "bench-feed")
        ends = [self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions_of(self._consumer, topic)]
        self._consumer.assign([TopicPartition(topic, p, end) for p, end in enumerate(ends)])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from streams.registry import build_codec

        codec = build_codec(self._codec_settings)
        while not self._stop.is_set():
            for msg in self._consumer.consume(500, 0.1):
                if msg.error() is not None:
                    continue
                record = raw_record(msg)
                headers = dict(record.headers)
                stamp = headers.get(HEADER_SOURCE_TIMESTAMP)
                if stamp is None or record.timestamp_ms is None or record.value is None:
                    continue
                event = codec.decode_event(record.value)
                fallbacks = tuple(str(f) for f in getattr(event, "fallbacks", ()))
                self.records.append((time.monotonic(), (record.timestamp_ms - int(stamp)) / 1000,
                                     getattr(event, "user_id", ""), fallbacks,
                                     headers.get(HEADER_FEED_CHANGE) == b"live"))
                self.last_arrival = time.monotonic()

    def wait_quiet(self, cap_s: float) -> float:
        """Seconds until no FeedUpdated came for `_QUIET_S` (at most `cap_s`)."""
        started = time.monotonic()
        while time.monotonic() - started < cap_s:
            if time.monotonic() - max(self.last_arrival, started) > _QUIET_S:
                break
            time.sleep(0.2)
        return max(0.0, min(self.last_arrival, time.monotonic()) - started)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def prepare(codec: AvroCodec, records: Iterator[InteractionRecord], count: int) -> list[tuple[bytes, bytes]]:
    """The next `count` interactions as (key, encoded value), built before a phase's clock starts:
    in production the producers run on machines of their own, and here building and encoding each
    event (~25 us) would take ~0.13 of the two cores at 5,000/s from the system measured. Their
    event time is when they were built (seconds before they are sent); the latency measured starts
    at each record's Kafka timestamp, taken when it is sent."""
    prepared = []
    for record in islice(records, count):
        event = interaction_event(record)
        event = PinInteraction(user_id=event.user_id, pin_id=event.pin_id, action=event.action,
                               session_id=event.session_id, board_id=event.board_id)
        prepared.append((event.user_id.encode(), codec.encode_event(event)))
    return prepared


def send(producer: EventProducer, prepared: Sequence[tuple[bytes, bytes]], rate: float) -> int:
    """Publish the prepared interactions at `rate`/s (open loop); returns how many were sent."""
    topic = producer.settings.topic(PINS_INTERACTIONS.name)
    for i in paced(len(prepared), rate):
        key, value = prepared[i]
        producer.send_raw(topic, key, value)
        producer.poll(0)
    producer.flush(60)
    return len(prepared)


def bare_kafka_latency(worker: LocalWorker, rate: float, count: int) -> list[float]:
    """Produce -> consume seconds of `count` small records at `rate`/s through a bare
    confluent-kafka producer and consumer on a private one-partition topic."""
    settings = worker.settings
    topic = f"{settings.topic_prefix}bench.feed.bare.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(settings.kafka_common())
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    consumer = Consumer(settings.kafka_common() | {"group.id": f"bare-{uuid.uuid4()}",
                                                   "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    producer = Producer(settings.kafka_common() | {"linger.ms": settings.producer_linger_ms,
                                                   "acks": "all"})
    latencies: list[float] = []
    done = threading.Event()

    def consume() -> None:
        while len(latencies) < count and not done.is_set():
            msg = consumer.poll(0.1)  # one at a time: a batch call would wait for its batch
            value = msg.value() if msg is not None and msg.error() is None else None
            if value:
                latencies.append(time.time() - struct.unpack("!d", value)[0])

    # A first record, not timed, so that the consumer is fetching before the clock starts.
    producer.produce(topic, b"")
    producer.flush(30)
    deadline = time.monotonic() + 30
    while (msg := consumer.poll(1.0)) is None or msg.error() is not None:
        if time.monotonic() > deadline:
            raise PinstreamError(f"the bare consumer read nothing from {topic} in 30 s")
    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    try:
        for _ in paced(count, rate):
            producer.produce(topic, struct.pack("!d", time.time()))
            producer.poll(0)
        producer.flush(30)
        reader.join(30)
    finally:
        done.set()
        reader.join(5)
        consumer.close()
        admin.delete_topics([topic])[topic].result(30)
    return latencies


def time_reads(worker: LocalWorker, redis_url: str, users: Sequence[str],
               reads: int) -> dict[str, list[float]]:
    """Seconds per feed read of the same users three ways: GET /feed over HTTP (a kept-alive
    connection), our Redis read (FeedCache.read_feed) and a bare ZREVRANGE WITHSCORES."""
    cache = FeedCache.from_settings(worker.settings.model_copy(update={"redis_url": redis_url}))
    bare = redis.Redis.from_url(redis_url)
    out: dict[str, list[float]] = {path: [] for path in READ_PATHS}
    try:
        with httpx.Client(base_url=worker.url, timeout=30) as client:
            client.get(f"/feed/{users[0]}")  # opens the connection
            for i in range(reads):
                user = users[i % len(users)]
                calls: tuple[Callable[[], object], ...] = (
                    partial(_http_read, client, user), partial(cache.read_feed, user),
                    partial(bare.zrevrange, cache.feed_key(user), 0, -1, withscores=True))
                # Interleaved, so that load from other processes falls on all three alike.
                for path, call in zip(READ_PATHS, calls, strict=True):
                    out[path].append(timed(call))
    finally:
        cache.close()
        bare.close()
    return out


def _http_read(client: httpx.Client, user: str) -> None:
    client.get(f"/feed/{user}").raise_for_status()


def worker_metrics(metrics_port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text


def wait_backlog_done(metrics_port: int, cap_s: float) -> float:
    """Seconds until the worker owes no re-rank (`pinstream_feed_rerank_backlog` 0), at most `cap_s`."""
    started = time.monotonic()
    while time.monotonic() - started < cap_s:
        if _samples(worker_metrics(metrics_port)).get(("pinstream_feed_rerank_backlog", "", ""), 0.0) == 0:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def by_label(text: str, sample: str, label: str) -> dict[str, float]:
    """Values of one sample (`name`, `name_sum`, ...) by the value of `label`."""
    return {found.labels[label]: found.value for family in text_string_to_metric_families(text)
            for found in family.samples if found.name == sample and label in found.labels}


def feed_stage_means(text: str) -> dict[str, float]:
    """Mean milliseconds per feed computation stage in the worker, from its metrics."""
    sums = by_label(text, "pinstream_feed_seconds_sum", "stage")
    counts = by_label(text, "pinstream_feed_seconds_count", "stage")
    return {stage: 1000 * sums[stage] / counts[stage] for stage in sums if counts.get(stage)}


def batch_means(before: str, after: str) -> dict[str, float]:
    """The worker's interaction batches between two metric scrapes: how many, mean records each,
    and the mean milliseconds of each batch phase (wait, graph, cache, ...)."""
    then, now = _samples(before), _samples(after)

    def delta(sample: str, label: str = "", value: str = "") -> float:
        key = (sample, label, value)
        return now.get(key, 0.0) - then.get(key, 0.0)

    batches = delta("pinstream_interaction_batch_records_count")
    records = delta("pinstream_interaction_batch_records_sum")
    out = {"batches": batches, "records_mean": records / batches if batches else 0.0}
    # The worker's CPU (every thread, and its live patch process) per interaction it took in,
    # over the same window.
    live_cpu = delta("pinstream_feed_live_process_cpu_seconds_total")
    cpu = delta("process_cpu_seconds_total") + live_cpu
    out["cpu_s"] = cpu
    out["live_cpu_s"] = live_cpu
    out["cpu_us_per_record"] = 1e6 * cpu / records if records else 0.0
    # Full collections stop every thread: their count and mean pause in the same window.
    collections = delta("pinstream_gc_pause_seconds_count", "generation", "2")
    paused = delta("pinstream_gc_pause_seconds_sum", "generation", "2")
    out |= {"gc_full": collections, "gc_full_pause_ms": 1000 * paused / collections if collections else 0.0}
    phases = [value for name, label, value in now  # in the worker's order
              if name == "pinstream_interaction_batch_seconds_count" and label == "phase"]
    for phase in phases:
        count = delta("pinstream_interaction_batch_seconds_count", "phase", phase)
        if count:
            spent = delta("pinstream_interaction_batch_seconds_sum", "phase", phase)
            out[f"{phase}_ms"] = 1000 * spent / count
    return out


def histogram_quantiles(before: str, after: str, name: str,
                        quantiles: Sequence[float] = (0.5, 0.99)) -> dict[str, float]:
    """Count and quantiles (as `p50`, `p99`, seconds) of what a histogram observed between two
    scrapes, interpolated linearly within the bucket the quantile falls in (as Prometheus'
    histogram_quantile does): exact to the bucket, not to the millisecond. A quantile in the
    last, unbounded bucket is reported as the largest finite bound, `<q>_above` set to 1."""
    then, now = _samples(before), _samples(after)
    bounds = sorted((float(value), (sample, label, value)) for sample, label, value in now
                    if sample == f"{name}_bucket" and label == "le")
    cumulative = [(bound, now[key] - then.get(key, 0.0)) for bound, key in bounds]
    total = cumulative[-1][1] if cumulative else 0.0
    out = {"count": total}
    if not total:
        return out
    for q in quantiles:
        rank, lower, below = q * total, 0.0, 0.0
        label = f"p{q * 100:g}"
        for bound, count in cumulative:
            if count >= rank:
                if bound == float("inf"):
                    out[label], out[f"{label}_above"] = lower, 1.0
                else:
                    share = (rank - below) / (count - below) if count > below else 1.0
                    out[label] = lower + (bound - lower) * share
                break
            lower, below = bound, count
    return out


def cpu_seconds_now(worker_scrape: str, private_redis: LocalRedis) -> dict[str, float]:
    """CPU seconds used so far by everything on the machine a phase exercises: the stack's
    services, the bench's private Redis, this process (the sender and the follower of the feed
    topic), the worker and its live patch process (from the worker's metrics, which take in the
    live process's CPU twice a second)."""
    samples = _samples(worker_scrape)
    out = {f"stack {name}": used for name, used in stack_cpu_seconds().items()}
    redis_pid = private_redis.process.pid if private_redis.process is not None else None
    redis_used = process_cpu_s(redis_pid) if redis_pid is not None else None
    if redis_used is not None:
        out["bench's redis"] = redis_used
    out["bench (sender, follower)"] = time.process_time()
    live = samples.get(("pinstream_feed_live_process_cpu_seconds_total", "", ""), 0.0)
    out["worker"] = samples.get(("process_cpu_seconds_total", "", ""), 0.0)
    out["live patch process"] = live
    return out


def cores_between(before: Mapping[str, float], after: Mapping[str, float], seconds: float
                  ) -> dict[str, float]:
    """Mean cores each process used between two `cpu_seconds_now` (largest first), and the total."""
    cores = {name: max(0.0, after[name] - before[name]) / seconds for name in after
             if name in before and seconds > 0}
    out = dict(sorted(cores.items(), key=lambda kv: -kv[1]))
    out["total"] = sum(cores.values())
    return out


@functools.lru_cache(maxsize=4)
def _samples(text: str) -> dict[tuple[str, str, str], float]:
    """Every sample of a scrape with at most one label, by (name, label, label value); each
    scrape parsed once (the phase's two scrapes serve the batch means and the live quantiles;
    callers only read the dict)."""
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if len(found.labels) <= 1:
                label, value = next(iter(found.labels.items()), ("", ""))
                out[(found.name, label, value)] = found.value
    return out


def run_feed_bench(workdir: Path, *, rates: Sequence[float], duration_s: float, users: int, warmup: int,
                   reads: int, seed: int, refresh_interval_s: float, rerank_share: float | None = None,
                   live_process: bool | None = None, progress: Progress = lambda _: None) -> FeedBenchResult:
    result = FeedBenchResult(warmup=warmup, users=users, stack_age_s=stack_ages())
    result.load.append(os.getloadavg())
    total = warmup + int(sum(rates) * duration_s) + 1000
    records = workload(total, users, seed)
    with LocalRedis(workdir) as private_redis:
        metrics_port = free_port()
        worker = LocalWorker(workdir, redis_url=private_redis.url, metrics_port=metrics_port,
                             feed_refresh_interval_s=refresh_interval_s,
                             **({"feed_rerank_share": rerank_share} if rerank_share is not None else {}),
                             **({"feed_live_process": live_process} if live_process is not None else {}))
        progress("starting the worker...")
        try:
            worker.start()
            follower = FeedFollower(worker)
            producer = EventProducer(worker.settings)
            progress(f"warm-up: {warmup:,} interactions...")
            send(producer, prepare(producer.codec, records, warmup), 20_000)
            # Caught up (offsets committed to the end) before the clock starts, then quiet.
            interactions = [worker.settings.topic(PINS_INTERACTIONS.name)]
            groups = {worker.settings.graph_group_id: interactions}
            if worker.settings.feed_live_process:  # its patches of the warm-up are not the phase's
                groups[worker.settings.live_group_id] = interactions
            wait_caught_up(worker.settings, groups, 300)
            # and every re-rank the warm-up owes is done: a phase measures its own work only
            wait_backlog_done(metrics_port, 300)
            follower.wait_quiet(300)
            for rate in rates:
                phase = RatePhase(rate, duration_s)
                count = int(rate * duration_s)
                prepared = prepare(producer.codec, records, count)
                progress(f"{rate:,.0f} interactions/s for {duration_s:g} s...")
                before = len(follower.records)
                scraped = worker_metrics(metrics_port)
                settled: list[str] = []
                scrape_settled = threading.Timer(SETTLED_AFTER_S, lambda into=settled: into.append(
                    worker_metrics(metrics_port)))
                started = time.monotonic()
                cpu_before = cpu_seconds_now(scraped, private_redis)
                scrape_settled.start()
                phase.sent = send(producer, prepared, rate)
                sent_for = time.monotonic() - started
                phase.cores = cores_between(cpu_before, cpu_seconds_now(worker_metrics(metrics_port),
                                                                        private_redis), sent_for)
                scrape_settled.join()
                phase.achieved_rate = phase.sent / max(sent_for, 1e-9)
                phase.drain_s = follower.wait_quiet(300)
                after = worker_metrics(metrics_port)
                phase.batches = batch_means(scraped, after)
                phase.live_redis = histogram_quantiles(scraped, after, "pinstream_feed_live_lag_seconds")
                if settled:
                    phase.live_redis_settled = histogram_quantiles(settled[0], after,
                                                                   "pinstream_feed_live_lag_seconds")
                seen = follower.records[before:]
                phase.refresh_s = [latency for _, latency, _, _, live in seen if not live]
                phase.live_s = [latency for _, latency, _, _, live in seen if live]
                phase.users_refreshed = len({user for _, _, user, _, live in seen if not live})
                for _, _, _, fallbacks, _ in seen:
                    for name in fallbacks:
                        phase.fallbacks[name] = phase.fallbacks.get(name, 0) + 1
                progress(f"bare confluent-kafka at {rate:,.0f}/s...")
                phase.bare_kafka_s = bare_kafka_latency(worker, rate, min(count, int(rate * 10)))
                result.phases.append(phase)
                result.load.append(os.getloadavg())
            producer.close()
            follower.close()
            metrics = worker_metrics(metrics_port)
            result.feed_stage_ms = feed_stage_means(metrics)
            result.graph_rows = by_label(metrics, "pinstream_feed_graph_rows_total", "source")
            fed = sorted({user for _, _, user, _, _ in follower.records})
            progress(f"feed reads ({reads} per path)...")
            if fed:
                result.reads = time_reads(worker, private_redis.url, fed[:200], reads)
            result.load.append(os.getloadavg())
        finally:
            worker.stop()
            worker.cleanup()
    return result


def result_rows(result: FeedBenchResult) -> tuple[list[list[str]], list[list[str]]]:
    """(refresh rows, read rows) of the printed tables."""
    def ms(values: dict[str, float], q: str) -> str:
        return f"{values[q] * 1000:,.0f} ms" if q in values else "-"

    refresh = []
    for phase in result.phases:
        bare = summary(phase.bare_kafka_s)
        for label, lags, drain in (
                ("live patch in Redis (worker histogram)", phase.live_redis, f"{phase.drain_s:.1f} s"),
                (f"  the same, from {SETTLED_AFTER_S:g} s into the phase", phase.live_redis_settled, "-")):
            if lags.get("count"):
                ratio = f"{lags['p99'] / bare['p99']:.0f}x" if "p99" in bare else "-"
                refresh.append([f"{phase.rate:,.0f}/s (sent {phase.achieved_rate:,.0f}/s)", label,
                                ms(lags, "p50"), ("> " if lags.get("p99_above") else "") + ms(lags, "p99"),
                                "-", f"{int(lags['count']):,}", drain, ms(bare, "p50"), ms(bare, "p99"),
                                ratio])
        for change, values in (("live patch announced", phase.live_s), ("full re-rank", phase.refresh_s)):
            ours = summary(values)
            ratio = f"{ours['p99'] / bare['p99']:.0f}x" if "p99" in ours and "p99" in bare else "-"
            refresh.append([f"{phase.rate:,.0f}/s (sent {phase.achieved_rate:,.0f}/s)", change,
                            ms(ours, "p50"), ms(ours, "p99"), ms(ours, "max"), f"{int(ours['count']):,}",
                            f"{phase.drain_s:.1f} s", ms(bare, "p50"), ms(bare, "p99"), ratio])
    reads = []
    bare_reads = summary(result.reads.get("bare redis ZREVRANGE", []))
    for path, values in result.reads.items():
        stats = summary(values)
        ratio = f"{stats['p99'] / bare_reads['p99']:.1f}x" if "p99" in stats and "p99" in bare_reads else "-"
        reads.append([path, ms(stats, "p50"), ms(stats, "p99"), ms(stats, "max"), ratio])
    return refresh, reads


REFRESH_COLUMNS = ("rate", "feed change", "p50", "p99", "max", "changes", "drain", "bare kafka p50",
                   "p99", "p99 vs bare")
READ_COLUMNS = ("read path", "p50", "p99", "max", "p99 vs bare")
