"""The fault campaign, short form, on the real stack: a worker and the reconciler take generated
traffic while both are killed with SIGKILL and Redis, the HBase Thrift server and the Kafka broker
are each stopped and started; afterwards every invariant holds, with 0 lost and 0 double-counted.
(`pinstream chaos` runs the full form: 100k events, 10 kills, 30 s outages.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.campaigns.chaos import chaos_worker, run_chaos
from streams.campaigns.chaos_plan import ChaosPlan
from streams.localworker import LocalWorker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(720)]


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[LocalWorker]:
    worker = chaos_worker(tmp_path)
    yield worker
    worker.cleanup()


def test_kills_and_outages_lose_nothing_and_double_count_nothing(worker: LocalWorker) -> None:
    plan = ChaosPlan(events=2_000, pins=24, users=50, duration_s=60, kills=4, outage_s=8,
                     converge_timeout_s=300, seed=11)
    result = run_chaos(worker, plan, progress=print)

    assert {o.service for o in result.outages} == {"redis", "thrift", "kafka"}
    assert all(o.down_s >= 8 for o in result.outages)
    assert result.processes["worker"]["kills"] + result.processes["reconciler"]["kills"] >= 3
    assert result.processes["worker"]["starts"] >= 2
    assert result.traffic.sent == 2_000 and result.traffic.unacknowledged == 0
    assert result.verdict is not None, "the pipeline never caught up"
    failing = [check.to_json() for check in result.verdict.checks if not check.ok]
    assert result.verdict.ok, failing
    assert (result.lost, result.double_counted) == (0, 0)
    counts = {check.name.split(":")[0]: check.counts for check in result.verdict.checks}
    assert counts["pins"]["created"] == 24 and counts["pins"]["lost"] == 0
    assert counts["graph"]["edges_differing"] == 0 and counts["graph"]["edges_stored"] > 0
