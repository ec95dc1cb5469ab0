"""The worker's side of the live patch process: the JSON lines it exchanges with it, the bounded
push queue (a full queue turns into `forget`), and the reports exported as the worker's metrics."""

from __future__ import annotations

import json

from processors.live_patches import FEED_LIVE_LAG, LIVE_ANNOUNCEMENTS
from processors.live_stage import LiveTally
from sinks.hbase_graph import Edge, RowWrite
from sinks.pool_metrics import POOL_EXHAUSTED, POOL_IN_USE
from streams.live_process import (
    FORGET,
    LIVE_CPU,
    LIVE_PATCHES,
    LIVE_PUSHES_LOST,
    PUSH_QUEUE,
    LivePatchProcess,
    LiveReport,
    parse_rows,
    rows_line,
)
from streams.settings import Settings, load_settings


def _value(counter: object, *labels: str) -> float:
    metric = counter.labels(*labels) if labels else counter  # type: ignore[attr-defined]
    return float(metric._value.get())


def test_user_and_pin_row_writes_cross_the_pipe_exactly_and_nothing_else_does() -> None:
    writes = [RowWrite("pin:p1", {"pin:p2": Edge(0.1 + 0.2, 1_790_000_000_123), "board:b": Edge(-2.5, 7)},
                       ("pin:p9",), {"interactions/0": 41}),
              RowWrite("board:b", {"pin:p1": Edge(1.0, 7)}),
              RowWrite("session:u:s", {"pin:p1": Edge(1.0, 7)}),
              RowWrite("user:u", {}, ("pin:p3",))]
    line = rows_line(writes)
    assert line is not None and line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_rows(json.loads(line)) == [
        RowWrite("pin:p1", {"pin:p2": Edge(0.1 + 0.2, 1_790_000_000_123), "board:b": Edge(-2.5, 7)},
                 ("pin:p9",)),
        RowWrite("user:u", {}, ("pin:p3",))]  # weights round-trip bit for bit; offsets stay home
    assert rows_line([RowWrite("board:b", {"pin:p1": Edge(1.0, 7)})]) is None


def test_reports_cross_the_pipe() -> None:
    report = LiveReport(LiveTally([0.05, 0.2], patched=2, planned=3, failed=0, announced=1, skipped=4,
                                  batches=2, records=9), assigned=6, rows_cells=120,
                        pools=[("pinstream_pool_in_use", "redis", 1.0)], cpu_s=1.25)
    assert LiveReport.from_json(json.loads(report.to_line())["report"]) == report


def test_a_full_push_queue_drops_the_push_and_the_next_one_starts_with_forget() -> None:
    live = LivePatchProcess(load_settings())
    write = [RowWrite("pin:p1", {"pin:p2": Edge(1.0, 1)})]
    lost_before = _value(LIVE_PUSHES_LOST)
    for _ in range(PUSH_QUEUE + 3):
        live.push(write)
    assert _value(LIVE_PUSHES_LOST) - lost_before == 3
    queued = [live._pushes.get_nowait() for _ in range(PUSH_QUEUE)]
    assert FORGET not in queued
    live.push(write)
    assert [live._pushes.get_nowait(), live._pushes.get_nowait()] == [FORGET, rows_line(write)]
    live.push([RowWrite("board:b", {"pin:p1": Edge(1.0, 1)})])  # nothing the process keeps
    assert live._pushes.empty()


def test_reports_become_the_workers_metrics() -> None:
    live = LivePatchProcess(load_settings())
    lags_before = next(s.value for s in FEED_LIVE_LAG.collect()[0].samples if s.name.endswith("_count"))
    announced_before = _value(LIVE_ANNOUNCEMENTS)
    patched_before, unpatched_before = _value(LIVE_PATCHES, "patched"), _value(LIVE_PATCHES, "unpatched")
    exhausted_before = _value(POOL_EXHAUSTED, "redis@live")
    cpu_before = _value(LIVE_CPU)
    # The process sends its counters' totals: the worker adds the growth (all of a total that
    # fell: a new process).
    for exhausted, cpu in ((2.0, 1.5), (5.0, 2.0), (5.0, 0.25)):
        live._export(LiveReport(LiveTally([0.03, 0.04], patched=2, planned=3, announced=1), assigned=4,
                                rows_cells=10,
                                pools=[("pinstream_pool_in_use", "redis", 3.0),
                                       ("pinstream_pool_exhausted", "redis", exhausted)], cpu_s=cpu))
    lags = next(s.value for s in FEED_LIVE_LAG.collect()[0].samples if s.name.endswith("_count"))
    assert lags - lags_before == 6
    assert _value(LIVE_ANNOUNCEMENTS) - announced_before == 3
    assert _value(LIVE_PATCHES, "patched") - patched_before == 6
    assert _value(LIVE_PATCHES, "unpatched") - unpatched_before == 3
    assert _value(LIVE_CPU) - cpu_before == 2.25
    assert _value(POOL_IN_USE, "redis@live") == 3.0
    assert _value(POOL_EXHAUSTED, "redis@live") - exhausted_before == 5.0
    assert live.assigned == 4 and not live.ready  # holding partitions, but no process running


def test_the_process_gets_the_workers_settings_secrets_included() -> None:
    settings = load_settings(None, topic_prefix="t1.", sasl_password="s3cret", feed_live_rows_ttl_s=12.5)
    line = json.dumps({"settings": settings.for_child()})
    assert Settings(**json.loads(line)["settings"]) == settings


def test_the_process_counts_as_behind_while_its_batches_start_late() -> None:
    live = LivePatchProcess(load_settings(feed_rerank_behind_ms=100))
    late = LiveTally(batches=4, records=400, phase_s={"wait": 0.6})  # 150 ms a batch
    prompt = LiveTally(batches=4, records=400, phase_s={"wait": 0.2})  # 50 ms a batch
    live._export(LiveReport(late, assigned=1, rows_cells=0))
    assert live.behind and live.health()["behind"] is True
    live._export(LiveReport(prompt, assigned=1, rows_cells=0))
    assert not live.behind
    live._export(LiveReport(late, assigned=1, rows_cells=0))
    live._export(LiveReport(LiveTally(), assigned=1, rows_cells=0))  # idle: nothing waited
    assert not live.behind
