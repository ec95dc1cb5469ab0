"""The invariant checks over in-memory facts: each pin state, a graph equal to / heavier than /
lighter than its recomputation, and each way a feed can be stale."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from processors.graph import GraphConfig, GraphEvent, batch_recompute
from processors.invariants import PinFacts, UserFeedFacts, check_feeds, check_graph, check_pins, verdict
from sinks.hbase_graph import Edge, StoredRow
from streams.events import InteractionAction, PinCreated, PinInteraction
from streams.settings import load_settings

CONFIG = GraphConfig.from_settings(load_settings(metrics_port=0))
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _pins(**changes: object) -> PinFacts:
    facts = PinFacts(created={"a", "b", "c", "d"}, embedded={"a", "b"},
                     stored_with_embedding={"a", "b"}, dead_lettered={"c": "corrupt_image"},
                     reconciling={"d": "EMBED"}, indexed={"a", "b"})
    for name, value in changes.items():
        setattr(facts, name, value)
    return facts


def test_complete_dead_lettered_and_reconciling_pins_pass() -> None:
    check = check_pins(_pins())
    assert check.ok and check.lost == 0
    assert (check.counts["complete"], check.counts["dead_lettered"], check.counts["reconciling"]) == (2, 1, 1)


def test_a_pin_missing_from_a_store_or_the_index_is_lost() -> None:
    for changes in ({"stored_with_embedding": {"a"}}, {"embedded": {"a"}}, {"indexed": {"b"}}):
        check = check_pins(_pins(**changes))
        assert not check.ok and check.lost == 1, changes
    check = check_pins(_pins(indexed=None, index_size=1))  # counted by the worker: one short
    assert not check.ok and check.lost == 1 and check.counts["index_vectors_missing"] == 1
    check = check_pins(_pins(indexed=None, index_size=3))
    assert not check.ok and check.double_counted == 1


def _events() -> list[GraphEvent]:
    return [
        PinCreated(event_time=T0, pin_id="p1", user_id="u1", board_id="b1", title="t", description=""),
        PinInteraction(event_time=T0 + timedelta(minutes=1), user_id="u1", pin_id="p1",
                       action=InteractionAction.SAVE, session_id="s", board_id="b2"),
        PinInteraction(event_time=T0 + timedelta(minutes=2), user_id="u1", pin_id="p2",
                       action=InteractionAction.CLICK, session_id="s"),
    ]


def _stored(graph: dict[str, dict[str, Edge]]) -> dict[str, StoredRow]:
    return {row: StoredRow(dict(edges), {}) for row, edges in graph.items()}


def test_graph_equal_to_its_recomputation_passes_and_a_redelivery_changes_nothing() -> None:
    expected = batch_recompute(_events(), CONFIG)
    assert check_graph(expected, _stored(expected), CONFIG).ok
    assert check_graph(batch_recompute(_events() * 2, CONFIG), _stored(expected), CONFIG).ok


def test_an_event_applied_twice_is_double_counted_and_a_missing_edge_lost() -> None:
    expected = batch_recompute(_events(), CONFIG)
    doubled = {row: dict(edges) for row, edges in expected.items()}
    edge = doubled["user:u1"]["pin:p1"]
    doubled["user:u1"]["pin:p1"] = edge.plus(edge.weight, edge.updated_ms, CONFIG.half_life_ms)
    check = check_graph(expected, _stored(doubled), CONFIG)
    assert not check.ok and check.double_counted == 1 and check.lost == 0
    assert "user:u1 -> pin:p1" in check.examples[0]
    missing = {row: dict(edges) for row, edges in expected.items()}
    del missing["user:u1"]["pin:p2"]
    check = check_graph(expected, _stored(missing), CONFIG)
    assert not check.ok and check.lost == 1 and check.double_counted == 0


def _user(**changes: object) -> UserFeedFacts:
    values: dict[str, object] = {"user_id": "u1", "last_interaction_ms": 1000, "last_feed_ms": 2000,
                                 "published": frozenset({"p1", "p2"}), "cached": frozenset({"p1", "p2"}),
                                 "hidden": frozenset({"p9"})}
    return UserFeedFacts(**(values | changes))  # type: ignore[arg-type]


def test_fresh_feeds_pass_and_every_stale_kind_is_named() -> None:
    assert check_feeds([_user(), _user(user_id="u2", published=frozenset(), cached=None)]).ok
    stale = {
        "never_published": _user(last_feed_ms=None),
        "published_before_last_interaction": _user(last_feed_ms=500),
        "not_cached": _user(cached=None),
        "hidden_pin_served": _user(cached=frozenset({"p1", "p9"}), published=frozenset({"p1", "p9"})),
        "cache_differs_from_published": _user(cached=frozenset({"p1"})),
    }
    for problem, user in stale.items():
        check = check_feeds([user])
        assert not check.ok and check.counts[problem] == 1, problem
    assert check_feeds([_user(cached=None, reconciling=True)]).ok


def test_the_verdict_sums_lost_and_double_counted() -> None:
    result = verdict(check_pins(_pins(embedded={"a"})), check_feeds([_user()]))
    assert not result.ok and result.lost == 1 and result.double_counted == 0
    assert result.to_json()["checks"][0]["ok"] is False
