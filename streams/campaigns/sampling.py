"""What the load campaign samples from a running worker: its RSS (from /proc), its consumer
group's lag, and its connection pools (from its Prometheus endpoint)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from streams.errors import PinstreamError
from streams.groups import group_lag
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
    """Records between the group's committed offsets and the ends of its topics."""
    return sum(row.lag for row in group_lag(settings, group))


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
