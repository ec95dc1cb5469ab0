"""The metrics endpoint serves our registry over HTTP; a busy port is a warning, not a crash."""

from __future__ import annotations

import socket

import httpx

from streams import metrics
from streams.settings import load_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_endpoint_exposes_counters_and_histograms() -> None:
    port = _free_port()
    assert metrics.serve_metrics(load_settings(metrics_port=port)) == port
    metrics.PRODUCED.labels("unit.topic").inc(3)
    metrics.DECODE_ERRORS.labels("unit.topic", "bad_magic").inc()
    metrics.DELIVERY_LATENCY.labels("unit.topic").observe(0.004)
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'pinstream_produced_total{topic="unit.topic"} 3.0' in body
    assert 'pinstream_decode_errors_total{reason="bad_magic",topic="unit.topic"} 1.0' in body
    assert 'pinstream_delivery_seconds_bucket{le="0.005",topic="unit.topic"} 1.0' in body


def test_busy_metrics_port_is_reported_not_fatal() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = int(busy.getsockname()[1])
        assert metrics.serve_metrics(load_settings(metrics_port=port)) is None


def test_metrics_port_zero_disables_the_endpoint() -> None:
    assert metrics.serve_metrics(load_settings(metrics_port=0)) is None
