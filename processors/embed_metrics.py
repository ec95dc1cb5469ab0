"""Prometheus metrics of the embedding path: micro-batch queue and sizes, per-stage seconds, failures.

Registered on the process registry (`streams.metrics.REGISTRY`), so the worker's endpoint serves them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from streams.metrics import REGISTRY

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

QUEUE_DEPTH = Gauge(
    "pinstream_batcher_queue_depth", "Items waiting in a micro-batcher's bounded queue.",
    ["batcher"], registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "pinstream_batcher_batch_size", "Items per micro-batch run.", ["batcher"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "pinstream_batcher_seconds", "Micro-batch phases: wait (first item queued -> run starts) "
    "and run (the batch function).", ["batcher", "phase"], buckets=_SECONDS, registry=REGISTRY,
)
BATCH_TIMEOUTS = Counter(
    "pinstream_batcher_timeouts_total", "Micro-batches that ran past their timeout.", ["batcher"],
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "pinstream_embed_stage_seconds", "Seconds per embedding stage: decode and preprocess per "
    "image, inference per batch.", ["stage"], buckets=_SECONDS, registry=REGISTRY,
)
FAILURES = Counter(
    "pinstream_embed_failures_total", "Images that could not be embedded, by reason.", ["reason"],
    registry=REGISTRY,
)
