"""`EventProducer(failures_only=True)` without a broker: every record that cannot be delivered is
reported as failed, none is counted as acknowledged. (With a broker: the integration test
tests/integration/test_producer_failures_only.py.)"""

from __future__ import annotations

import pytest

from streams.metrics import REGISTRY
from streams.producer import EventProducer
from streams.settings import load_settings


def _unreachable(**overrides: object) -> EventProducer:
    settings = load_settings(bootstrap_servers="127.0.0.1:1", metrics_port=0)
    # log_level 0: the refused connections are the point here, not news for the test log.
    return EventProducer(settings, failures_only=True,
                         **{"message.timeout.ms": 300, "log_level": 0} | overrides)


def test_records_that_time_out_are_failures_and_none_acknowledged() -> None:
    producer = _unreachable()
    topic = "failures-only-unreachable"
    for index in range(5):
        producer.send_raw(topic, b"k", b"v%d" % index)
    producer.send_raw(topic, b"k", b"with context", context=7)
    assert producer.flush(10) == 0  # all timed out, so nothing is pending
    assert producer.failed == 6
    assert producer.delivered == 0
    assert [r.context for r in producer.recent_failures] == [None] * 5 + [7]
    assert all("_MSG_TIMED_OUT" in (r.error or "") for r in producer.recent_failures)
    assert REGISTRY.get_sample_value("pinstream_produced_total", {"topic": topic}) in (None, 0.0)
    failed = REGISTRY.get_sample_value("pinstream_produce_failed_total",
                                       {"topic": topic, "reason": "_MSG_TIMED_OUT"})
    assert failed == 6


def test_failures_only_refuses_a_per_record_callback() -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:1", metrics_port=0)
    with pytest.raises(ValueError, match="failures_only"):
        EventProducer(settings, failures_only=True, on_delivery=lambda report: None)


def test_close_raises_while_records_are_still_pending() -> None:
    producer = _unreachable(**{"message.timeout.ms": 60_000})
    producer.send_raw("failures-only-pending", b"k", b"v")
    with pytest.raises(Exception, match="unacknowledged"):
        producer.close(0.2)
    assert producer.delivered == 0
