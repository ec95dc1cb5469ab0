"""Prometheus metrics of every connection pool, labelled by pool name (alert rules use these names)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from streams.metrics import REGISTRY

POOL_IN_USE = Gauge(
    "pinstream_pool_in_use", "Connections lent out or being opened for a borrower.", ["pool"],
    registry=REGISTRY,
)
POOL_IDLE = Gauge("pinstream_pool_idle", "Open connections waiting in the pool.", ["pool"],
                  registry=REGISTRY)
POOL_MAX = Gauge("pinstream_pool_max", "Most connections the pool may hold.", ["pool"],
                 registry=REGISTRY)
POOL_ACQUIRE_SECONDS = Histogram(
    "pinstream_pool_acquire_seconds", "Time to borrow a connection (waiting, health check, connect).",
    ["pool"], registry=REGISTRY,
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0),
)
POOL_EXHAUSTED = Counter(
    "pinstream_pool_exhausted_total", "Borrows refused: no connection came free within the timeout.",
    ["pool"], registry=REGISTRY,
)
POOL_LEAKS = Counter(
    "pinstream_pool_leaks_total",
    "Borrowed connections held past the leak threshold, or dropped without being returned.",
    ["pool"], registry=REGISTRY,
)
POOL_DISCARDED = Counter(
    "pinstream_pool_discarded_total", "Connections closed instead of reused, by reason.",
    ["pool", "reason"], registry=REGISTRY,
)
