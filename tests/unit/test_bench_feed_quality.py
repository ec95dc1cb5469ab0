"""The feed-quality bench: the time split, the in-memory graph's edge model, and the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.bench.feed_workload import START, GraphWeights, build_graph, split_last_positives
from streams.cli import cli
from streams.events import NodeType
from streams.settings import load_settings
from streams.workload.population import build_world
from streams.workload.records import InteractionRecord, epoch_ms

DAY = 86_400_000


def event(user: str, pin: str, action: str, at: int, session: str = "s1",
          board: str | None = None) -> InteractionRecord:
    return InteractionRecord(f"{user}-{pin}-{action}-{at}", at, user, pin, action, session, board)  # type: ignore[arg-type]


def test_the_last_positively_engaged_pins_are_held_out_and_only_new_ones_are_targets() -> None:
    events = [event("u1", "a", "click", 1), event("u1", "b", "save", 2), event("u1", "x", "impression", 3),
              event("u1", "a", "closeup", 4), event("u1", "c", "click", 5), event("u2", "a", "click", 6)]
    split = split_last_positives(events, held_out=3)

    assert split.targets == {"u1": frozenset({"b", "c"})}  # "a" was engaged before the cut
    assert [(e.user_id, e.pin_id) for e in split.train] == [("u1", "a"), ("u2", "a")]
    assert split.end_ms == 6


def test_the_graph_follows_the_graph_stage_edge_model() -> None:
    world = build_world(1, users=3, pins=6, clusters=2, boards_per_user=1)
    weights = GraphWeights.from_settings(load_settings())
    now = epoch_ms(START) + 10 * DAY  # pins are created in the 30 days before START
    events = [event("u1", "p00000001", "impression", now), event("u1", "p00000001", "save", now, board="bx"),
              event("u1", "p00000002", "click", now - 7 * DAY, session="s3"),
              event("u1", "p00000003", "hide", now),
              event("u1", "p00000002", "click", now - DAY, session="s2"),
              event("u1", "p00000001", "click", now - DAY, session="s2")]
    graph = build_graph(world, events, now, weights)
    user = graph.rows[NodeType.USER]["u1"][NodeType.PIN]

    # A save now and a click a day ago; the impression adds nothing.
    assert user["p00000001"] == pytest.approx(weights.actions["save"] + 2 ** (-1 / 7))
    assert user["p00000002"] == pytest.approx(0.5 + 2 ** (-1 / 7))  # clicks a week and a day old
    assert user["p00000003"] == pytest.approx(weights.actions["hide"])
    assert graph.rows[NodeType.BOARD]["bx"][NodeType.PIN]["p00000001"] == pytest.approx(weights.board)
    assert graph.rows[NodeType.PIN]["p00000001"][NodeType.USER]["u1"] == user["p00000001"]
    co = graph.rows[NodeType.PIN]["p00000001"][NodeType.PIN]
    assert co == {"p00000002": pytest.approx(2 ** (-1 / 7))}  # only session s2 engaged both


def test_the_command_reports_quality_and_latency(tmp_path: Path) -> None:
    out = tmp_path / "fq.json"
    result = CliRunner().invoke(cli, ["bench", "feed-quality", "--users", "40", "--pins", "400",
                                      "--days", "7", "--sessions", "4", "--scale-users", "60",
                                      "--scale-pins", "600", "--scale-feeds", "5", "--out", str(out)])

    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    methods = {m["method"]: m for m in data["methods"]}
    assert set(methods) == {"walks + embeddings", "walks only", "co-engagement (deadline fallback)",
                            "popularity", "random"}
    assert methods["walks + embeddings"]["hr@50"] >= methods["random"]["hr@50"]
    assert data["latency_at_scale"]["feeds"] == 5
    assert "HR@10" in result.output and "popularity" in result.output
