"""`pinstream bench broker`: the local broker's CPU while a steady stream of records is produced and
read by consumer groups, once with librdkafka's consumer defaults (the baseline) and once per
setting that merges requests: our fetch wait, then the fetch wait with offsets committed once a
second instead of after every batch. A broker's CPU follows requests rather than records, so these
settings are what decides it at a given rate; the consumers' latency shows what they cost.

The broker's CPU is read from the local stack's Kafka process (`pinstream stack up`).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.bench.report import code_revision, machine_info, percentile
from streams.errors import PinstreamError
from streams.interaction_consumer import fetch_batch
from streams.settings import Settings
from streams.stack import cpu_seconds

log = logging.getLogger(__name__)

PARTITIONS = 6
VALUE_BYTES = 120  # about an interaction's size
_BATCH = 500
_JOIN_TIMEOUT_S = 60.0
_STAMP = struct.Struct("!d")


@dataclass(frozen=True, slots=True)
class ClientProfile:
    """How the consumers talk to the broker in one phase."""

    name: str
    fetch_wait_ms: int  # 0: librdkafka's defaults (a fetch answered as soon as a record is there)
    commit_interval_s: float  # 0: an asynchronous commit after every batch


@dataclass
class PhaseResult:
    profile: ClientProfile
    sent: int
    seconds: float
    broker_cores: float
    commits: int
    received: list[int]  # per consumer group
    consumer_errors: int
    latencies_s: list[float] = field(repr=False)  # produce -> consume, every group's records

    def latency_ms(self, q: float) -> float | None:
        return 1000 * percentile(self.latencies_s, q) if self.latencies_s else None

    def to_json(self, baseline: PhaseResult) -> dict[str, Any]:
        return {
            "profile": self.profile.name, "fetch_wait_ms": self.profile.fetch_wait_ms,
            "commit_interval_s": self.profile.commit_interval_s, "sent": self.sent,
            "seconds": round(self.seconds, 3), "broker_cores": round(self.broker_cores, 4),
            "broker_cores_vs_defaults": round(self.broker_cores / baseline.broker_cores, 3)
            if baseline.broker_cores else None,
            "commits": self.commits, "received_per_group": self.received,
            "latency_ms": {q: None if (ms := self.latency_ms(p)) is None else round(ms, 2)
                           for q, p in (("p50", 50), ("p99", 99))},
            "consumer_errors": self.consumer_errors,
        }


def profiles(settings: Settings) -> tuple[ClientProfile, ...]:
    wait = settings.consumer_fetch_wait_ms or 10
    return (
        ClientProfile("librdkafka defaults, commit per batch", 0, 0.0),
        ClientProfile(f"fetch wait {wait} ms, commit per batch", wait, 0.0),
        ClientProfile(f"fetch wait {wait} ms, commit once a second", wait, 1.0),
    )


@dataclass
class BrokerBenchResult:
    rate: int
    duration_s: float
    groups: int
    phases: list[PhaseResult] = field(default_factory=list)

    def to_json(self, command: str) -> dict[str, Any]:
        baseline = self.phases[0]
        return {
            "bench": "broker", "command": command, "commit": code_revision(), "rate": self.rate,
            "duration_s": self.duration_s,
            "consumer_groups": self.groups, "partitions": PARTITIONS, "value_bytes": VALUE_BYTES,
            "machine": machine_info(["confluent-kafka"]),
            "phases": [phase.to_json(baseline) for phase in self.phases],
        }


class _Reader(threading.Thread):
    """One consumer group reading the topic in batches, timing each record from its send. Its
    consumer lives in the thread: built, used and closed there."""

    def __init__(self, settings: Settings, topic: str, commit_interval_s: float,
                 stop: threading.Event) -> None:
        super().__init__(daemon=True, name="bench-broker-reader")
        self.settings = settings
        self.group = f"bench-broker-{uuid.uuid4().hex[:8]}"
        self.topic = topic
        self.commit_interval_s = commit_interval_s
        self.stop = stop
        self.assigned = threading.Event()
        self.received = 0
        self.commits = 0
        self.errors = 0  # error events the consumer reported (counted, not fatal)
        self.latencies: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            consumer = Consumer(self.settings.kafka_consumer(self.group, **{"auto.offset.reset": "latest"}))
        except BaseException as exc:  # handed to the bench's thread, which raises it
            self.error = exc
            return
        try:
            consumer.subscribe([self.topic])
            self._read(consumer)
        except BaseException as exc:
            self.error = exc
        finally:
            consumer.close()

    def _read(self, consumer: Consumer) -> None:
        last_commit = time.monotonic()
        pending = False
        while not self.stop.is_set():
            # As the interaction consumer fetches, with no linger: what came with the first.
            messages = fetch_batch(consumer, _BATCH, 0.1, 0)
            if consumer.assignment():
                self.assigned.set()
            now = time.time()
            for message in messages:
                value = message.value()
                if message.error() is not None:
                    self.errors += 1
                elif value is not None and len(value) >= _STAMP.size:
                    self.latencies.append(now - _STAMP.unpack_from(value)[0])
                    self.received += 1
            pending = pending or bool(messages)
            due = time.monotonic() - last_commit >= self.commit_interval_s
            if pending and (due or not messages):  # an idle fetch commits what was held back
                consumer.commit(asynchronous=True)
                self.commits += 1
                pending, last_commit = False, time.monotonic()


def _broker_cpu_s(settings: Settings) -> float:
    used = cpu_seconds(settings).get("kafka")
    if used is None:
        raise PinstreamError("the broker's CPU is read from the local stack's Kafka process, and none "
                             "runs: start it with `pinstream stack up`")
    return used


def _send(producer: Producer, topic: str, rate: int, duration_s: float) -> tuple[int, float]:
    """Records at `rate`/s for `duration_s`, each stamped with its send time; (sent, seconds)."""
    padding = b"x" * (VALUE_BYTES - _STAMP.size)
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < duration_s:
        ahead = sent / rate - elapsed
        if ahead > 0.001:
            time.sleep(ahead)
        try:
            producer.produce(topic, _STAMP.pack(time.time()) + padding, str(sent % 1000).encode())
        except BufferError:  # the local queue is full: serve it, and send this one again
            producer.poll(0.1)
            continue
        producer.poll(0)
        sent += 1
    producer.flush(30)
    return sent, time.monotonic() - started


def _phase(settings: Settings, topic: str, profile: ClientProfile, rate: int, duration_s: float,
           groups: int) -> PhaseResult:
    scoped = settings.model_copy(update={"consumer_fetch_wait_ms": profile.fetch_wait_ms})
    stop = threading.Event()
    readers = [_Reader(scoped, topic, profile.commit_interval_s, stop) for _ in range(groups)]
    for reader in readers:
        reader.start()
    producer = Producer(settings.kafka_producer())
    try:
        _wait_assigned(readers, topic, settings)
        time.sleep(2.0)  # the groups' first fetches and commits settle before the clock starts
        cpu_before = _broker_cpu_s(settings)
        sent, seconds = _send(producer, topic, rate, duration_s)
        broker_cores = (_broker_cpu_s(settings) - cpu_before) / seconds
        until = time.monotonic() + 10.0
        while any(r.received < sent and r.error is None for r in readers) and time.monotonic() < until:
            time.sleep(0.05)
    finally:
        stop.set()
        for reader in readers:
            reader.join(30)
    _raise_reader_error(readers)
    return PhaseResult(profile, sent, seconds, broker_cores, sum(r.commits for r in readers),
                       [r.received for r in readers], sum(r.errors for r in readers),
                       [x for r in readers for x in r.latencies])


def _wait_assigned(readers: list[_Reader], topic: str, settings: Settings) -> None:
    deadline = time.monotonic() + _JOIN_TIMEOUT_S
    while not all(reader.assigned.is_set() for reader in readers):
        _raise_reader_error(readers)
        if time.monotonic() > deadline:
            raise PinstreamError(f"a consumer group got no partitions of {topic} in "
                                 f"{_JOIN_TIMEOUT_S:.0f} s: is Kafka at "
                                 f"{settings.bootstrap_servers} healthy?")
        time.sleep(0.05)


def _raise_reader_error(readers: list[_Reader]) -> None:
    for reader in readers:
        if reader.error is not None:
            raise PinstreamError(f"a consumer group failed: {reader.error}") from reader.error


def run_broker_bench(settings: Settings, rate: int, duration_s: float, groups: int, *,
                     progress: Callable[[str], None] | None = None) -> BrokerBenchResult:
    """One phase per client profile over a private topic (deleted afterwards)."""
    say = progress or (lambda _: None)
    _broker_cpu_s(settings)  # fail before creating anything
    topic = f"bench{uuid.uuid4().hex[:10]}.broker"
    admin = AdminClient(settings.kafka_common())
    result = BrokerBenchResult(rate, duration_s, groups)
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=60)
        for profile in profiles(settings):
            say(f"{profile.name}: {rate:,} records/s for {duration_s:.0f} s, {groups} consumer group(s)")
            result.phases.append(_phase(settings, topic, profile, rate, duration_s, groups))
    finally:
        try:
            admin.delete_topics([topic], operation_timeout=60)[topic].result(timeout=60)
        except Exception as exc:  # the run's own outcome (or error) matters more
            log.warning("bench topic %s not deleted (%s): delete it with the admin tools", topic, exc)
    return result
