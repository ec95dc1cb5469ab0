"""Prometheus metrics: one registry for the process, the metric families, and the HTTP endpoint.

Long-running commands call `serve_metrics(settings)`; everything else only increments.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from streams.settings import Settings

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

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
    "pinstream_delivery_seconds", "From produce() to the broker's acknowledgement.", ["topic"],
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
