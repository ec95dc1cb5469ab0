"""Prometheus metrics of the HBase pin store: latency and failures of each store operation."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from streams.metrics import REGISTRY

HBASE_SECONDS = Histogram(
    "pinstream_hbase_seconds", "Duration of one pin-store call (borrow, round trips, decode).",
    ["op"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HBASE_ROWS = Counter(
    "pinstream_hbase_rows_total", "Rows written or read by the pin store.", ["op"], registry=REGISTRY
)
HBASE_ERRORS = Counter(
    "pinstream_hbase_errors_total", "Pin-store calls that failed, by operation and error type.",
    ["op", "error"], registry=REGISTRY,
)
