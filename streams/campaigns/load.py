"""The load campaign: a worker on a private namespace takes a sustained interaction rate, then a
spike (3x by default), then the sustained rate again, while its RSS, consumer lag and pools are
sampled each second; afterwards the invariants are checked. It passes when memory stays bounded,
lag comes back down after the spike, no pool is ever exhausted and nothing is lost or doubled."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from processors.invariant_inputs import verify_namespace
from processors.invariants import Verdict
from streams.bench.report import code_revision, machine_info, percentile
from streams.blobs import BlobStore
from streams.campaigns.sampling import LagReader, Sample, pool_samples, rss_bytes
from streams.events import InteractionAction, PinInteraction
from streams.groups import worker_groups
from streams.localworker import LocalWorker, free_port
from streams.offsets import partitions_of, plain_consumer, watermarks
from streams.producer import EventProducer, PinProducer
from streams.ratelimit import RateLimiter
from streams.stack import manager
from streams.topics import FEEDS_UPDATED, PINS_INTERACTIONS
from streams.workload.images import render_pin_image
from streams.workload.population import build_world
from streams.workload.sessions import iter_interactions

Progress = Callable[[str], None]
_START = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """Rates in interactions/s, durations in seconds."""

    rate: float = 200.0
    spike_factor: float = 3.0
    warmup_s: float = 20.0
    sustained_s: float = 60.0
    spike_s: float = 180.0
    recovery_s: float = 120.0
    pins: int = 20  # pins with images published first (embedded by the real model), + 1 corrupt
    users: int = 300
    seed: int = 7
    memory_ratio_limit: float = 1.5  # peak RSS after the warm-up over the warm-up's RSS
    drain_timeout_s: float = 300.0

    def phases(self) -> list[tuple[str, float, float]]:
        """(name, seconds, rate) in order."""
        return [("warmup", self.warmup_s, self.rate), ("sustained", self.sustained_s, self.rate),
                ("spike", self.spike_s, self.rate * self.spike_factor),
                ("recovery", self.recovery_s, self.rate)]


@dataclass
class LoadResult:
    plan: LoadPlan
    sent: dict[str, int] = field(default_factory=dict)
    achieved_rate: dict[str, float] = field(default_factory=dict)
    phase_ends_s: dict[str, float] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    drained_after_s: float | None = None
    missed_samples: int = 0
    servers_restarted: list[str] = field(default_factory=list)  # stack pids changed during the run
    last_sample_error: str | None = None
    verdict: Verdict | None = None
    dead_letters: dict[str, int] = field(default_factory=dict)

    # --- the figures -----------------------------------------------------------------------

    def _rss(self, phases: set[str]) -> list[int]:
        return [s.rss_bytes for s in self.samples if s.phase in phases]

    @property
    def baseline_rss(self) -> int:
        warm = self._rss({"warmup"})
        return int(median(warm[-5:])) if warm else 0

    @property
    def peak_rss(self) -> int:
        return max(self._rss({"sustained", "spike", "recovery", "drain"}), default=0)

    @property
    def memory_bounded(self) -> bool:
        return bool(self.baseline_rss) and self.peak_rss <= self.baseline_rss * self.plan.memory_ratio_limit

    @property
    def recover_threshold(self) -> int:
        """Lag back at the sustained level: its 95th percentile, or 3 s of traffic if higher."""
        sustained = [float(s.lag) for s in self.samples if s.phase == "sustained"]
        level = percentile(sustained, 95) if sustained else 0.0
        return int(max(level, self.plan.rate * 3))

    @property
    def lag_recovery_s(self) -> float | None:
        """Seconds from the end of the spike until lag is back at the sustained level."""
        spike_end = self.phase_ends_s.get("spike")
        if spike_end is None:
            return None
        for sample in self.samples:
            if sample.at_s >= spike_end and sample.lag <= self.recover_threshold:
                return round(sample.at_s - spike_end, 1)
        return None

    @property
    def pool_usage_max(self) -> dict[str, float]:
        usage: dict[str, float] = {}
        for sample in self.samples:
            for name, pool in sample.pools.items():
                usage[name] = max(usage.get(name, 0.0), pool.usage)
        return usage

    @property
    def pools_exhausted(self) -> int:
        last = self.samples[-1].pools if self.samples else {}
        return int(sum(pool.exhausted for pool in last.values()))

    @property
    def pool_leaks(self) -> int:
        last = self.samples[-1].pools if self.samples else {}
        return int(sum(pool.leaks for pool in last.values()))

    @property
    def ok(self) -> bool:
        return (self.memory_bounded and self.lag_recovery_s is not None and self.pools_exhausted == 0
                and all(u < 1.0 for u in self.pool_usage_max.values())
                and self.verdict is not None and self.verdict.ok)

    def to_json(self, command: str) -> dict[str, Any]:
        return {
            "campaign": "load", "command": command, "revision": code_revision(),
            "plan": asdict(self.plan), "ok": self.ok, "sent": self.sent,
            "achieved_rate": self.achieved_rate,
            "memory": {"baseline_rss_mib": _mib(self.baseline_rss), "peak_rss_mib": _mib(self.peak_rss),
                       "peak_over_baseline": round(self.peak_rss / self.baseline_rss, 3)
                       if self.baseline_rss else None, "bounded": self.memory_bounded},
            "lag": {"recovered_at_or_below": self.recover_threshold if self.samples else None,
                    "peak": max((s.lag for s in self.samples), default=0),
                    "recovered_after_spike_s": self.lag_recovery_s,
                    "drained_after_traffic_s": self.drained_after_s},
            "pools": {"usage_max": self.pool_usage_max, "exhausted": self.pools_exhausted,
                      "leaks": self.pool_leaks},
            "missed_samples": self.missed_samples, "last_sample_error": self.last_sample_error,
            "servers_restarted_during_run": self.servers_restarted,
            "invariants": self.verdict.to_json() if self.verdict else None,
            "dead_letters": self.dead_letters,
            "samples": [{"at_s": s.at_s, "phase": s.phase, "rss_mib": _mib(s.rss_bytes), "lag": s.lag,
                         "pools": {n: [p.in_use, p.max_size] for n, p in s.pools.items()}}
                        for s in self.samples],
            "machine": machine_info(["confluent-kafka", "faust-streaming", "happybase", "redis"]),
        }


def _mib(value: int) -> float:
    return round(value / 2**20, 1)


class _Sampler:
    """Samples the worker once a second in a thread, labelled with the current phase."""

    def __init__(self, worker: LocalWorker, metrics_url: str, result: LoadResult) -> None:
        assert worker.process is not None
        self.pid = worker.process.pid
        self.settings = worker.settings
        self.lag = LagReader(worker.settings, worker_groups(worker.settings))
        self.metrics_url = metrics_url
        self.result = result
        self.phase = "warmup"
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.result.samples.append(Sample(
                    self.elapsed(), self.phase, rss_bytes(self.pid), self.lag.lag(),
                    pool_samples(self.metrics_url)))
            except Exception as exc:  # a store or the broker restarting: the sample is missed
                self.result.missed_samples += 1
                self.result.last_sample_error = f"{type(exc).__name__}: {exc}"[:300]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.lag.close()


def _interactions(plan: LoadPlan, tag: str) -> Iterator[PinInteraction]:
    """An endless stream of generated interactions (users tagged with the run, so that its users
    are told apart from any other run's in logs and topics)."""
    round_ = 0
    while True:
        world = build_world(plan.seed + round_, users=plan.users, pins=max(500, plan.users * 5))
        for record in iter_interactions(world, start=_START + timedelta(days=7 * round_), days=7):
            yield PinInteraction(
                event_id=uuid.uuid4(), event_time=datetime.fromtimestamp(record.event_time_ms / 1000, UTC),
                user_id=f"{tag}-{record.user_id}", pin_id=record.pin_id,
                action=InteractionAction(record.action.upper()), session_id=record.session_id,
                board_id=record.board_id)
        round_ += 1


def _publish_pins(worker: LocalWorker, plan: LoadPlan, tag: str) -> None:
    blobs = BlobStore(worker.settings.blob_dir)
    world = build_world(plan.seed, users=4, pins=max(plan.pins, 1), clusters=8)
    rng = np.random.default_rng(plan.seed)
    with PinProducer(worker.settings, rate_limiter=RateLimiter(0)) as producer:
        for i in range(plan.pins):
            image = render_pin_image(rng, world.clusters[i % len(world.clusters)].theme)
            producer.create_pin(pin_id=f"{tag}-p{i}", user_id=f"{tag}-u{i % 4}", board_id=f"{tag}-b{i % 3}",
                                title=f"load pin {i}", image_ref=blobs.put(image))
        producer.create_pin(pin_id=f"{tag}-corrupt", user_id=f"{tag}-u0", board_id=f"{tag}-b0",
                            title="corrupt image", image_ref=blobs.put(b"\x89PNG\r\n\x1a\n" + b"\0" * 64))


def _drive(producer: EventProducer, stream: Iterator[PinInteraction], seconds: float, rate: float,
           sampler: _Sampler, result: LoadResult, phase: str) -> None:
    """Open loop: interaction i of the phase is due at start + i / rate whatever the worker does."""
    sampler.phase = phase
    started = time.monotonic()
    total = int(seconds * rate)
    for i in range(total):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        event = next(stream)
        producer.send_event(PINS_INTERACTIONS, event.user_id, event)
        if i % 100 == 0:
            producer.poll(0)
    producer.flush(60)
    result.sent[phase] = total
    result.achieved_rate[phase] = round(total / max(time.monotonic() - started, 1e-9), 1)
    result.phase_ends_s[phase] = sampler.elapsed()


def _quietly(read: Callable[[], int]) -> int | None:
    """A figure read from Kafka, or None while the broker does not answer (it may be restarting)."""
    try:
        return read()
    except Exception:
        return None


def _drain(sampler: _Sampler, result: LoadResult, timeout_s: float, settle_s: float) -> None:
    """Wait for the worker's lag to reach 0, then for the coalesced feed refreshes to settle."""
    sampler.phase = "drain"
    traffic_end = sampler.elapsed()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _quietly(sampler.lag.lag) == 0:
            result.drained_after_s = round(sampler.elapsed() - traffic_end, 1)
            break
        time.sleep(1.0)
    # Feed refreshes are coalesced per user: settled once feeds.updated.v1 stops growing.
    consumer = plain_consumer(sampler.settings, "load-settle")
    topic = sampler.settings.topic(FEEDS_UPDATED.name)
    try:
        last: int | None = -1
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            end = _quietly(lambda: sum(watermarks(consumer, topic, p).high
                                       for p in partitions_of(consumer, topic)))
            if end is None or end != last:
                last, stable_since = end, time.monotonic()
            elif time.monotonic() - stable_since >= settle_s:
                return
            time.sleep(0.5)
    finally:
        consumer.close()


def _stack_pids() -> dict[str, int | None]:
    return {service.name: service.pid for service in manager.status()}


def load_worker(workdir: Path) -> LocalWorker:
    """A worker on a private namespace with its metrics endpoint on (what the campaign samples)."""
    return LocalWorker(workdir, metrics_port=free_port(), feed_refresh_interval_s=1.0)


def run_load(worker: LocalWorker, plan: LoadPlan, progress: Progress) -> LoadResult:
    """Start `worker` (from `load_worker`), drive it, check the invariants, stop it. The caller
    owns the namespace (`worker.cleanup()`)."""
    result = LoadResult(plan)
    tag = uuid.uuid4().hex[:6]
    # The stack is shared: a server restarted meanwhile (by hand, by a fault campaign) is a fault
    # this campaign did not plan, and its verdict must say so.
    pids_before = _stack_pids()
    try:
        progress("starting the worker (model load, index catch-up)")
        worker.start()
        metrics_url = f"http://127.0.0.1:{worker.settings.metrics_port}/metrics"
        sampler = _Sampler(worker, metrics_url, result)
        sampler.start()
        progress(f"publishing {plan.pins} pins and one with a corrupt image")
        _publish_pins(worker, plan, tag)
        stream = _interactions(plan, tag)
        with EventProducer(worker.settings) as producer:
            for phase, seconds, rate in plan.phases():
                progress(f"{phase}: {rate:g} interactions/s for {seconds:g} s")
                _drive(producer, stream, seconds, rate, sampler, result, phase)
        progress("draining: waiting for lag 0 and the last feed refreshes")
        _drain(sampler, result, plan.drain_timeout_s,
               settle_s=3 * worker.settings.feed_refresh_interval_s + 3)
        sampler.stop()
        progress("checking the invariants")
        verdict, facts = verify_namespace(worker.settings, worker_url=worker.url)
        result.verdict = verdict
        result.dead_letters = facts.dead_letter_reasons
        result.servers_restarted = sorted(name for name, pid in _stack_pids().items()
                                          if pid != pids_before.get(name))
    finally:
        worker.stop()
    return result
