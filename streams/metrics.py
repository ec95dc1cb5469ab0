"""Prometheus metrics: one registry for the process, the metric families, and the HTTP endpoint.

Long-running commands call `serve_metrics(settings)`; everything else only increments.
"""

from __future__ import annotations

import gc
import logging
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from streams.settings import Settings

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
# process_cpu_seconds_total, process_resident_memory_bytes, open file descriptors: what a
# process costs (`pinstream bench feed` divides the worker's CPU seconds by the interactions).
ProcessCollector(registry=REGISTRY)

PRODUCED = Counter(
    "pinstream_produced_total", "Records acknowledged by Kafka.", ["topic"], registry=REGISTRY
)
PRODUCE_FAILED = Counter(
    "pinstream_produce_failed_total", "Records Kafka did not acknowledge.", ["topic", "reason"],
    registry=REGISTRY,
)
REFUSED = Counter(
    "pinstream_refused_total", "Producer calls refused before sending (rate limit, invalid).",
    ["topic", "reason"], registry=REGISTRY,
)
CONSUMED = Counter(
    "pinstream_consumed_total", "Records consumed and decoded.", ["topic"], registry=REGISTRY
)
DECODE_ERRORS = Counter(
    "pinstream_decode_errors_total", "Records that failed to decode, by reason.", ["topic", "reason"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "pinstream_delivery_seconds", "From produce() to the broker's acknowledgement (producers that "
    "report every delivery; the worker's reports only failures).", ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "pinstream_consumer_lag", "Records between the committed/consumed position and the end.",
    ["group", "topic", "partition"], registry=REGISTRY,
)
REPLAYED = Counter(
    "pinstream_replayed_total", "Records copied by replay.", ["source", "target"], registry=REGISTRY
)


GC_PAUSES = Histogram(
    "pinstream_gc_pause_seconds", "Python garbage-collection pauses (every thread stops), by generation.",
    ["generation"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)


def watch_gc() -> None:
    """Time every garbage collection into GC_PAUSES (once per process): a full collection of a
    heap holding the graph cache stops the interpreter for as long as it takes."""
    if any(getattr(callback, "__name__", "") == "_gc_timer" for callback in gc.callbacks):
        return
    started = [0.0]
    for generation in ("0", "1", "2"):
        GC_PAUSES.labels(generation)

    def _gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            GC_PAUSES.labels(str(info["generation"])).observe(time.perf_counter() - started[0])

    gc.callbacks.append(_gc_timer)


GC_THRESHOLDS = (50_000, 20, 100)


def freeze_heap() -> int:
    """Collect once, then move every object alive now (modules, the model, the loaded index and
    rows) out of the collector's sight; returns how many. Full collections then scan only what
    came later: with torch, faust and the rest loaded, one took ~300 ms (every thread stopped),
    which was the p99 of the feed's live patches. Frozen objects are still freed by reference
    counting; only a cycle among them outlives its last use (the startup objects rarely die)."""
    gc.collect()
    gc.freeze()
    # Young collections every 50,000 net allocations instead of 700, a full one after 100 of
    # the middle ones instead of 10: cycles are rare here (reference counting frees the rest),
    # and each collection stops every thread.
    gc.set_threshold(*GC_THRESHOLDS)
    return gc.get_freeze_count()


def serve_metrics(settings: Settings) -> int | None:
    """Expose REGISTRY over HTTP on settings.metrics_port (0 = disabled). Returns the port."""
    if settings.metrics_port == 0:
        return None
    try:
        start_http_server(settings.metrics_port, addr="127.0.0.1", registry=REGISTRY)
    except OSError as exc:
        log.warning("metrics endpoint not started: port %s: %s (set PINSTREAM_METRICS_PORT)",
                    settings.metrics_port, exc)
        return None
    return settings.metrics_port
