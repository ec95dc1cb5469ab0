"""Small helpers shared by every benchmark: timing, summary statistics, machine description, JSON
results under `bench/results/` and the printed table. Nothing here knows what is being measured."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path("bench/results")


def timed(work: Callable[[], object]) -> float:
    """Seconds that one call of `work` took (monotonic, high resolution)."""
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


class Laps:
    """Consecutive intervals without closures: `lap()` gives the seconds since the previous lap."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        return elapsed


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Series:
    """One quantity measured once per repetition (e.g. events/s of one code path)."""

    label: str
    unit: str
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def percentile(self, q: float) -> float:
        return percentile(self.values, q)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "values": list(self.values),
        }


def ratio(ours: Series, ceiling: Series) -> float:
    """Ours over the ceiling (1.0 = as fast as the bare library): the median of the per-repetition
    ratios when both were measured side by side in each repetition (paired, so that load from
    other processes cancels out), else the ratio of the medians."""
    if len(ours.values) != len(ceiling.values):
        return ours.median / ceiling.median
    return statistics.median(o / c for o, c in zip(ours.values, ceiling.values, strict=True))


def machine_info(packages: Iterable[str] = ()) -> dict[str, Any]:
    """What a figure depends on: CPU, cores, Python, the named packages' versions, the date."""
    try:
        usable_cores: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable_cores = None
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cpu_mhz": _proc_field("/proc/cpuinfo", "cpu MHz"),
        "memory": _proc_field("/proc/meminfo", "MemTotal"),
        "cpu_cores": os.cpu_count(),
        "usable_cores": usable_cores,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def code_revision() -> str | None:
    """The git commit checked out when the figures were measured (None outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _proc_field(path: str, key: str) -> str | None:
    """The first `key: value` of a Linux /proc file (None elsewhere)."""
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return None


def default_result_path(bench: str) -> Path:
    """`bench/results/<bench>-<YYYY-MM-DD>.json` (UTC date)."""
    return RESULTS_DIR / f"{bench}-{datetime.now(UTC).date().isoformat()}.json"


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write `payload` as indented JSON, creating the folder; returns the path written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def print_table(console: Console, title: str, columns: Sequence[str],
                rows: Iterable[Sequence[str]], caption: str | None = None) -> None:
    """A plain table: the first column left-aligned (labels), the others right-aligned (figures)."""
    table = Table(title=title, caption=caption)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def fmt_rate(value: float) -> str:
    """Events per second, grouped by thousands, no decimals (`12,345`)."""
    return f"{value:,.0f}"
