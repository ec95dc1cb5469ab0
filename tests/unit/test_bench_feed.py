"""The pieces of `pinstream bench feed` without servers: open-loop pacing, summaries and table
rows, the workload, the refresh plan's oldest-pending timestamps, and the command's arguments."""

from __future__ import annotations

import time
from itertools import islice

import pytest
from click.testing import CliRunner

from processors.live_patches import RefreshPlan
from streams.bench.feed import (
    READ_PATHS,
    YOUNG_HBASE_S,
    FeedBenchResult,
    RatePhase,
    batch_means,
    cores_between,
    histogram_quantiles,
    paced,
    result_rows,
    summary,
    workload,
)
from streams.cli import cli


def test_pacing_is_open_loop_at_the_asked_rate() -> None:
    started = time.monotonic()
    sent = list(paced(50, 500.0))
    elapsed = time.monotonic() - started
    assert sent == list(range(50))
    assert 49 / 500 - 0.01 <= elapsed < 1.0


def test_summaries_and_rows_put_ours_beside_the_bare_ceiling() -> None:
    assert summary([]) == {"count": 0.0}
    stats = summary([0.1] * 99 + [1.0])
    assert stats["p50"] == pytest.approx(0.1) and stats["max"] == 1.0 and stats["count"] == 100
    phase = RatePhase(1000.0, 10.0, sent=10_000, achieved_rate=998.0, refresh_s=[0.05, 0.2, 0.3],
                      live_s=[0.06, 0.07], bare_kafka_s=[0.01, 0.01, 0.03], drain_s=1.5)
    result = FeedBenchResult(phases=[phase], reads={READ_PATHS[0]: [0.004, 0.006],
                                                    READ_PATHS[2]: [0.001, 0.002]})
    refresh, reads = result_rows(result)
    assert refresh[0][:2] == ["1,000/s (sent 998/s)", "live patch announced"] and refresh[0][5] == "2"
    assert refresh[1][1] == "full re-rank"
    assert refresh[1][3] == "298 ms" and refresh[1][-1] == "10x"  # p99 0.298 s vs 0.0298 s
    phase.live_redis = {"count": 400.0, "p50": 0.06, "p99": 0.14}
    refresh, _ = result_rows(result)
    assert refresh[0][1] == "live patch in Redis (worker histogram)"
    assert refresh[0][2:4] == ["60 ms", "140 ms"] and refresh[0][5] == "400" and refresh[0][-1] == "5x"
    phase.live_redis = {"count": 400.0, "p50": 0.06, "p99": 30.0, "p99_above": 1.0}
    assert result_rows(result)[0][0][3] == "> 30,000 ms"
    phase.live_redis_settled = {"count": 300.0, "p50": 0.03, "p99": 0.09}  # without the first seconds
    settled_row = result_rows(result)[0][1]
    assert settled_row[1] == "  the same, from 3 s into the phase"
    assert settled_row[2:4] == ["30 ms", "90 ms"] and settled_row[5] == "300"
    assert reads[0][0] == READ_PATHS[0] and reads[0][-1] == "3.0x"
    assert reads[1][-1] == "1.0x"
    payload = result.to_json("pinstream bench feed")
    assert payload["phases"][0]["refresh_latency_s"]["count"] == 3
    assert payload["phases"][0]["live_latency_s"]["count"] == 2
    assert payload["reads_s"][READ_PATHS[2]]["max"] == 0.002
    assert payload["phases"][0]["live_redis_latency_after_first_s"] == {"after_s": 3.0, "count": 300.0,
                                                                        "p50": 0.03, "p99": 0.09}


def test_cores_are_each_process_cpu_growth_over_the_phase_largest_first() -> None:
    before = {"worker": 10.0, "stack kafka": 5.0, "bench (sender, follower)": 1.0, "gone": 3.0}
    after = {"worker": 16.0, "stack kafka": 9.5, "bench (sender, follower)": 2.5, "new": 1.0}
    cores = cores_between(before, after, 10.0)
    assert list(cores) == ["worker", "stack kafka", "bench (sender, follower)", "total"]
    assert cores["worker"] == pytest.approx(0.6) and cores["stack kafka"] == pytest.approx(0.45)
    assert cores["total"] == pytest.approx(1.2)


def test_the_workload_comes_in_session_bursts_of_known_users() -> None:
    records = list(islice(workload(2000, 50, seed=3), 2000))
    assert len(records) == 2000
    assert len({r.user_id for r in records}) <= 50
    times = [r.event_time_ms for r in records]
    assert times == sorted(times)


def test_the_refresh_plan_keeps_each_users_oldest_pending_timestamp() -> None:
    plan = RefreshPlan(interval_s=1.0)
    plan.mark("u1", 200)
    plan.mark("u1", 100)
    plan.mark("u1", 300)
    plan.mark("u2", None)
    plan.mark("u2", 50)
    assert plan.due(now=10.0, limit=10) == {"u1": 100, "u2": 50}
    plan.mark("u1", 400)
    assert plan.due(now=10.5, limit=10) == {}  # refreshed 0.5 s ago: coalesced
    assert plan.due(now=11.0, limit=10) == {"u1": 400}


@pytest.mark.parametrize("rates", ["x", "0", ","])
def test_bad_rates_are_refused_before_anything_starts(rates: str) -> None:
    result = CliRunner().invoke(cli, ["bench", "feed", "--rates", rates])
    assert result.exit_code == 2
    assert "--rates" in result.output


def test_batch_means_are_the_difference_between_two_scrapes() -> None:
    def scrape(batches: int, records: int, graph_s: float, gc_full: int, gc_s: float) -> str:
        return "\n".join([
            f'pinstream_interaction_batch_seconds_count{{phase="graph"}} {batches}',
            f'pinstream_interaction_batch_seconds_sum{{phase="graph"}} {graph_s}',
            f"pinstream_interaction_batch_records_count {batches}",
            f"pinstream_interaction_batch_records_sum {records}",
            f'pinstream_gc_pause_seconds_count{{generation="2"}} {gc_full}',
            f'pinstream_gc_pause_seconds_sum{{generation="2"}} {gc_s}',
            f"process_cpu_seconds_total {batches / 10}",
        ]) + "\n"

    means = batch_means(scrape(10, 500, 1.0, 1, 0.3), scrape(30, 2500, 2.0, 3, 0.4))
    assert means["batches"] == 20
    assert means["records_mean"] == 100
    assert means["graph_ms"] == pytest.approx(50.0)
    assert means["gc_full"] == 2
    assert means["gc_full_pause_ms"] == pytest.approx(50.0)
    assert means["cpu_s"] == pytest.approx(2.0)  # 3.0 - 1.0 s over 2,000 records
    assert means["cpu_us_per_record"] == pytest.approx(1000.0)


def test_histogram_quantiles_interpolate_within_the_bucket_between_two_scrapes() -> None:
    def scrape(counts: dict[str, int]) -> str:
        return "\n".join(f'pinstream_feed_live_lag_seconds_bucket{{le="{le}"}} {n}'
                         for le, n in counts.items()) + "\n"

    before = scrape({"0.05": 10, "0.1": 10, "0.15": 10, "+Inf": 10})
    # 100 new: 50 under 50 ms, 40 in (50, 100], 9 in (100, 150], 1 above
    after = scrape({"0.05": 60, "0.1": 100, "0.15": 109, "+Inf": 110})
    found = histogram_quantiles(before, after, "pinstream_feed_live_lag_seconds")
    assert found["count"] == 100
    assert found["p50"] == pytest.approx(0.05)  # the 50th of 100 ends the first bucket
    assert found["p99"] == pytest.approx(0.15)  # the 99th is the last within 150 ms
    worst = histogram_quantiles(before, scrape({"0.05": 10, "0.1": 10, "0.15": 10, "+Inf": 20}),
                                "pinstream_feed_live_lag_seconds")
    assert worst["p99"] == 0.15 and worst["p99_above"] == 1.0  # beyond the last bound
    assert histogram_quantiles(before, before, "pinstream_feed_live_lag_seconds") == {"count": 0.0}


def test_a_young_hbase_is_named_and_an_old_or_unknown_one_is_not() -> None:
    assert FeedBenchResult(stack_age_s={"hbase": 120.0}).young_hbase() == 120.0
    assert FeedBenchResult(stack_age_s={"hbase": YOUNG_HBASE_S + 1}).young_hbase() is None
    assert FeedBenchResult(stack_age_s={"kafka": 5.0}).young_hbase() is None  # external HBase
    assert "stack_age_s" in FeedBenchResult(stack_age_s={"hbase": 1.0}).to_json("cmd")
