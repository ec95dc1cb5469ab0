"""The load campaign in short, on the real stack with a worker process: under a sustained rate and
a 3x spike, memory stays bounded, lag recovers, no pool runs out, and `verify` finds nothing lost
or doubled; then it does find a doubled graph edge and a lost pin that we plant."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from processors.invariant_inputs import verify_namespace
from sinks.hbase import PinStore
from sinks.hbase_graph import GraphStore, RowWrite
from streams.campaigns.load import LoadPlan, LoadResult, load_worker, run_load
from streams.errors import StackError
from streams.localworker import LocalWorker
from streams.settings import Settings
from streams.stack import hbase

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PLAN = LoadPlan(rate=40, warmup_s=8, sustained_s=12, spike_s=20, recovery_s=15, pins=3, users=30)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoadResult, LocalWorker]]:
    worker = load_worker(tmp_path_factory.mktemp("load"))
    try:
        yield run_load(worker, PLAN, print), worker
    finally:
        worker.stop()
        _hbase_up(worker.settings)
        worker.cleanup()


def test_a_spike_leaves_memory_bounded_lag_recovered_and_pools_unexhausted(
        campaign: tuple[LoadResult, LocalWorker]) -> None:
    result, _ = campaign
    assert result.sent == {"warmup": 320, "sustained": 480, "spike": 2400, "recovery": 600}
    assert result.achieved_rate["spike"] >= 100
    assert len(result.samples) >= 40 and {s.phase for s in result.samples} >= {"warmup", "spike", "recovery"}
    assert result.memory_bounded, (result.baseline_rss, result.peak_rss)
    assert result.lag_recovery_s is not None and result.drained_after_s is not None
    assert result.pools_exhausted == 0 and result.pool_leaks == 0
    usage = result.pool_usage_max
    assert any(name.startswith("hbase") for name in usage) and all(u < 1.0 for u in usage.values())
    assert result.verdict is not None
    assert result.verdict.ok, result.verdict.to_json()
    assert result.verdict.lost == 0 and result.verdict.double_counted == 0
    pins, graph, feeds = result.verdict.checks
    assert pins.counts["complete"] == PLAN.pins and pins.counts["dead_lettered"] == 1
    assert graph.counts["edges_expected"] > 500 and feeds.counts["fresh"] == PLAN.users
    assert any(label.endswith(":corrupt_image") for label in result.dead_letters)
    assert result.ok


def _hbase_up(settings: Settings) -> None:
    """Other tests stop and start the Thrift server: wait for it rather than fail on it."""
    deadline = time.monotonic() + 180
    while True:
        try:
            hbase.probe_thrift(settings.hbase_host, settings.hbase_port)
            return
        except StackError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def _verify_cli(worker: LocalWorker) -> subprocess.CompletedProcess[str]:
    _hbase_up(worker.settings)
    return subprocess.run([sys.executable, "-m", "streams.cli", "verify"], env=worker.env,
                          capture_output=True, text=True, timeout=300)


def test_verify_finds_a_doubled_edge_and_a_lost_pin(campaign: tuple[LoadResult, LocalWorker]) -> None:
    _, worker = campaign
    settings = worker.settings
    clean = _verify_cli(worker)  # the stopped worker's index snapshot stands in for /healthz
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "lost=0 double_counted=0 verdict=PASS" in clean.stdout

    _hbase_up(settings)
    graph = GraphStore.from_settings(settings, create_tables=False)
    try:
        row, edges = next((key, row.edges) for key, row in graph.scan("user:").items() if row.edges)
        column, edge = next(iter(edges.items()))
        graph.write_batch([RowWrite(row, {column: edge._replace(weight=edge.weight * 2)})])
    finally:
        graph.close()
    store = PinStore.from_settings(settings, create_tables=False)
    try:
        verdict, facts = verify_namespace(settings)
        complete = sorted(facts.pins.stored_with_embedding - set(facts.pins.dead_lettered))
        lost_pin = complete[:1]
        store.delete_pin(lost_pin[0])
    finally:
        store.close()
    assert verdict.checks[1].double_counted == 1 and not verdict.ok

    broken = _verify_cli(worker)
    assert broken.returncode == 1
    assert "double_counted=1" in broken.stdout and "lost=1" in broken.stdout, broken.stdout
    assert lost_pin[0] in broken.stdout and f"{row} -> {column}" in broken.stdout
