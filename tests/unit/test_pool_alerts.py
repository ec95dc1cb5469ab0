"""The Prometheus rules for pools and feeds: they parse, fire at the thresholds the design asks
for, and name only metrics that we export."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sinks.pool import ConnectionPool, PoolConfig
from streams.metrics import REGISTRY

RULES_FILE = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "alerts.yml"


@pytest.fixture(scope="module")
def rules() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(RULES_FILE.read_text())
    found = {rule["alert"]: rule for group in document["groups"] for rule in group["rules"]}
    assert all(isinstance(rule["expr"], str) for rule in found.values())
    return found


def exported_sample_names() -> set[str]:
    """Every sample name the registry exposes once a pool exists (labelled series appear then)."""
    import processors.interactions  # noqa: F401  (registers the feed and batch histograms)

    pool = ConnectionPool(PoolConfig("alerts-check", "fake"), create=object, close=lambda conn: None)
    with pool.connection():
        pass
    names = {sample.name for family in REGISTRY.collect() for sample in family.samples}
    pool.close()
    return names


def test_usage_alert_fires_at_80_percent_held_for_one_minute(rules: dict[str, dict[str, Any]]) -> None:
    rule = rules["PinstreamPoolNearlyExhausted"]
    match = re.fullmatch(r"\s*pinstream_pool_in_use\s*/\s*pinstream_pool_max\s*>=\s*([0-9.]+)\s*",
                         rule["expr"])
    assert match is not None, rule["expr"]
    # The reference incident rose from 85% to 100% in 3 minutes: 80% for 1 minute leaves time.
    assert float(match.group(1)) == 0.8
    assert rule["for"] == "1m"


def test_leak_and_exhaustion_alerts_fire_on_the_first_event(rules: dict[str, dict[str, Any]]) -> None:
    assert re.fullmatch(r"increase\(pinstream_pool_leaks_total\[\d+m\]\)\s*>\s*0",
                        rules["PinstreamPoolLeak"]["expr"].strip())
    assert re.fullmatch(r"increase\(pinstream_pool_exhausted_total\[\d+m\]\)\s*>\s*0",
                        rules["PinstreamPoolExhausted"]["expr"].strip())
    assert "for" not in rules["PinstreamPoolLeak"]


def test_every_metric_the_rules_name_is_exported(rules: dict[str, dict[str, Any]]) -> None:
    named = {name for rule in rules.values() for name in re.findall(r"\bpinstream_[a-z_]+", rule["expr"])}
    exported = exported_sample_names()
    assert named and named <= exported, named - exported


def test_counters_exist_at_zero_before_the_first_event() -> None:
    pool = ConnectionPool(PoolConfig("alerts-zero", "fake"), create=object, close=lambda conn: None)
    for metric in ("pinstream_pool_leaks_total", "pinstream_pool_exhausted_total"):
        assert REGISTRY.get_sample_value(metric, {"pool": "alerts-zero"}) == 0
    pool.close()


def test_the_feed_alert_fires_when_live_patches_miss_the_150_ms_slo(rules: dict[str, dict[str, Any]]) -> None:
    rule = rules["PinstreamFeedLiveLagOverSlo"]
    assert "histogram_quantile(0.99," in rule["expr"]
    assert "pinstream_feed_live_lag_seconds_bucket" in rule["expr"]
    assert float(rule["expr"].rsplit(">", 1)[1]) == 0.15
    assert 'phase="wait"' in rules["PinstreamInteractionStageBehind"]["expr"]
