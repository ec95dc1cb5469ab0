"""What the load campaign samples from a running worker: its RSS (from /proc), its consumer
group's lag, and its connection pools (from its Prometheus endpoint)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from streams.errors import PinstreamError
from streams.groups import committed_offsets, group_lag
from streams.offsets import partitions_of, plain_consumer, watermarks
from streams.settings import Settings


@dataclass(frozen=True, slots=True)
class PoolSample:
    in_use: float
    max_size: float
    exhausted: float
    leaks: float

    @property
    def usage(self) -> float:
        return self.in_use / self.max_size if self.max_size else 0.0


@dataclass(frozen=True, slots=True)
class Sample:
    at_s: float  # since the campaign started
    phase: str
    rss_bytes: int
    lag: int
    pools: dict[str, PoolSample] = field(default_factory=dict)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError as exc:
        raise PinstreamError(f"cannot read the RSS of process {pid}: {exc}") from exc
    raise PinstreamError(f"no VmRSS line for process {pid}")


def total_lag(settings: Settings, group: str) -> int:
    """Records between the group's committed offsets and the ends of its topics (one-off read;
    a campaign sampling each second keeps a `LagReader`)."""
    return sum(row.lag for row in group_lag(settings, group))


def wait_caught_up(settings: Settings, groups: dict[str, list[str]], timeout_s: float, *,
                   poll_s: float = 1.0) -> float | None:
    """Seconds until each group has committed up to the ends of its topics (0 where it never
    committed), or None after `timeout_s`."""
    started = time.monotonic()
    reader = LagReader(settings, groups)
    try:
        while time.monotonic() - started < timeout_s:
            try:
                if reader.lag() == 0:
                    return time.monotonic() - started
            except (PinstreamError, KafkaException):
                pass
            time.sleep(poll_s)
    finally:
        reader.close()
    return None


class LagReader:
    """The lag of consumer groups, each over its topics, through one admin client and one
    consumer kept for the whole campaign (a client a second, dropped while a request to a
    restarting broker is in flight, is what librdkafka does not survive)."""

    def __init__(self, settings: Settings, groups: dict[str, list[str]]) -> None:
        self._admin = AdminClient(settings.kafka_common())
        self._consumer = plain_consumer(settings, "load-lag")
        self._partitions = {
            group: [(topic, p) for topic in topics for p in partitions_of(self._consumer, topic)]
            for group, topics in groups.items()}

    def lag(self) -> int:
        """Records between the groups' committed offsets (0 where none) and the log ends."""
        ends: dict[tuple[str, int], int] = {}
        total = 0
        for group, partitions in self._partitions.items():
            committed = committed_offsets(self._admin, group, timeout_s=10, wait_s=15)
            for topic, partition in partitions:
                if (topic, partition) not in ends:
                    ends[(topic, partition)] = watermarks(self._consumer, topic, partition).high
                total += ends[(topic, partition)] - committed.get((topic, partition), 0)
        return total

    def close(self) -> None:
        self._consumer.close()


def pool_samples(metrics_url: str) -> dict[str, PoolSample]:
    """Every pool's in-use, max, exhausted and leak figures from a Prometheus text endpoint."""
    text = httpx.get(metrics_url, timeout=5).text
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            pool = sample.labels.get("pool")
            if pool is not None:
                values[(sample.name, pool)] = sample.value
    pools = {pool for _, pool in values}
    return {pool: PoolSample(
        in_use=values.get(("pinstream_pool_in_use", pool), 0.0),
        max_size=values.get(("pinstream_pool_max", pool), 0.0),
        exhausted=values.get(("pinstream_pool_exhausted_total", pool), 0.0),
        leaks=values.get(("pinstream_pool_leaks_total", pool), 0.0),
    ) for pool in sorted(pools)}
