"""`pinstream bench broker` without a broker: the phases it runs, what its JSON reports, and the
error that names the fix when no local Kafka process can be measured."""

from __future__ import annotations

import pytest

from streams.bench import broker
from streams.bench.broker import BrokerBenchResult, ClientProfile, PhaseResult, profiles, run_broker_bench
from streams.errors import PinstreamError
from streams.settings import load_settings


def test_the_defaults_come_first_then_one_setting_at_a_time() -> None:
    defaults, waiting, interval = profiles(load_settings(consumer_fetch_wait_ms=25))
    assert (defaults.fetch_wait_ms, defaults.commit_interval_s) == (0, 0.0)
    assert (waiting.fetch_wait_ms, waiting.commit_interval_s) == (25, 0.0)
    assert (interval.fetch_wait_ms, interval.commit_interval_s) == (25, 1.0)
    # Settings that keep librdkafka's defaults still compare against the shipped wait.
    assert profiles(load_settings(consumer_fetch_wait_ms=0))[1].fetch_wait_ms == 10


def _phase(name: str, cores: float, commits: int, latencies: list[float]) -> PhaseResult:
    return PhaseResult(ClientProfile(name, 0, 0.0), 1000, 10.0, cores, commits, [1000, 998], 0, latencies)


def test_each_phase_reports_its_cores_against_the_defaults_and_its_latency() -> None:
    result = BrokerBenchResult(100, 10.0, 2, [_phase("defaults", 0.5, 900, [0.002, 0.004, 0.010]),
                                              _phase("ours", 0.2, 10, [0.010] * 3)])
    report = result.to_json("pinstream bench broker")
    first, second = report["phases"]
    assert first["broker_cores_vs_defaults"] == 1.0 and second["broker_cores_vs_defaults"] == 0.4
    assert first["latency_ms"]["p50"] == 4.0 and second["latency_ms"]["p99"] == 10.0
    assert second["commits"] == 10 and second["received_per_group"] == [1000, 998]
    assert report["consumer_groups"] == 2 and report["partitions"] == broker.PARTITIONS


def test_a_phase_without_records_reports_no_latency_rather_than_nan() -> None:
    result = BrokerBenchResult(100, 10.0, 1, [_phase("defaults", 0.0, 0, [])])
    [phase] = result.to_json("pinstream bench broker")["phases"]
    assert phase["latency_ms"] == {"p50": None, "p99": None}
    assert phase["broker_cores_vs_defaults"] is None  # no baseline CPU to divide by


def test_without_a_local_kafka_process_it_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker, "cpu_seconds", lambda settings: {"redis": 1.0})
    with pytest.raises(PinstreamError, match="pinstream stack up"):
        run_broker_bench(load_settings(), 1000, 2.0, 1)
