"""Live feed patches planned from the graph processor's rows, and the feed's cached graph reader."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from processors.feed_patch import PatchParams, RelatedCache, TimedInteraction, _related, plan_patches
from processors.graph_reader import CachedGraphReader
from sinks.hbase_graph import Edge, group_edges
from streams.events import InteractionAction, NodeType, PinInteraction

NOW = 1_780_000_000_000
WEIGHTS = {InteractionAction.IMPRESSION: 0.0, InteractionAction.CLICK: 1.0, InteractionAction.CLOSEUP: 2.0,
           InteractionAction.SAVE: 4.0, InteractionAction.HIDE: -8.0}
PARAMS = PatchParams(WEIGHTS, related=3)


def act(user: str, pin: str, action: InteractionAction, ts: int | None = NOW - 50) -> TimedInteraction:
    event = PinInteraction(event_id=uuid.uuid4(), event_time=datetime.fromtimestamp(NOW / 1000, UTC),
                           user_id=user, pin_id=pin, action=action, session_id="s")
    return TimedInteraction(event, ts)


def rows_of(rows: Mapping[str, Mapping[str, Edge]]):  # type: ignore[no-untyped-def]
    return rows.get


ROWS = {
    "pin:p1": {"pin:a": Edge(4.0, NOW), "pin:b": Edge(2.0, NOW), "pin:c": Edge(1.0, NOW),
               "pin:d": Edge(0.5, NOW), "board:b1": Edge(1.0, NOW), "user:u1": Edge(4.0, NOW)},
    "pin:p2": {"pin:a": Edge(1.0, NOW), "pin:e": Edge(1.0, NOW)},
    "user:u1": {"pin:p1": Edge(4.0, NOW), "pin:b": Edge(1.0, NOW), "pin:x": Edge(-8.0, NOW),
                "pin:seen": Edge(0.1, NOW)},
}


def test_an_engagement_removes_the_pin_and_lifts_its_strongest_co_engaged_pins() -> None:
    [planned] = plan_patches([act("u1", "p1", InteractionAction.SAVE)], rows_of(ROWS), PARAMS, NOW)

    assert planned.patch.user_id == "u1"
    assert planned.patch.remove == ("p1",)
    # b is left out: the user engaged with it; d is past the 3 strongest (a, b, c).
    assert planned.patch.lift == (("a", 1.0, "live:p1"), ("c", 0.25, "live:p1"))
    assert planned.oldest_ms == NOW - 50


def test_weaker_actions_lift_less_and_the_strongest_reason_wins() -> None:
    batch = [act("u2", "p2", InteractionAction.CLICK, NOW - 10),
             act("u2", "p1", InteractionAction.CLOSEUP, NOW - 30)]
    [planned] = plan_patches(batch, rows_of(ROWS), PARAMS, NOW)

    lifted = {pin: (share, reason) for pin, share, reason in planned.patch.lift}
    assert lifted["a"] == (0.5, "live:p1")  # closeup 2/4 * 1.0 beats click 1/4 * 1.0
    assert lifted["e"] == (0.25, "live:p2")
    assert set(planned.patch.remove) == {"p1", "p2"}
    assert planned.oldest_ms == NOW - 30


def test_hides_only_remove_and_impressions_change_nothing() -> None:
    batch = [act("u1", "p9", InteractionAction.HIDE), act("u3", "p1", InteractionAction.IMPRESSION)]
    planned = plan_patches(batch, rows_of(ROWS), PARAMS, NOW)

    assert [(p.patch.user_id, p.patch.remove, p.patch.lift) for p in planned] == [("u1", ("p9",), ())]


def test_decayed_user_edges_decide_what_is_shown_again() -> None:
    week = 7 * 86_400_000
    rows = {**ROWS, "user:u1": {"pin:b": Edge(1.0, NOW - 2 * week)}}  # 0.25 now: below 0.5
    [planned] = plan_patches([act("u1", "p1", InteractionAction.SAVE)], rows_of(rows), PARAMS, NOW)

    assert [pin for pin, _, _ in planned.patch.lift] == ["a", "b", "c"]


def test_related_zero_turns_patches_off() -> None:
    off = PatchParams(WEIGHTS, related=0)
    assert plan_patches([act("u1", "p1", InteractionAction.SAVE)], rows_of(ROWS), off, NOW) == []


class FakeStore:
    half_life_ms = 7 * 86_400_000.0

    def __init__(self, rows: Mapping[str, Mapping[str, Edge]]) -> None:
        self.rows = rows
        self.asked: list[list[str]] = []

    def now_ms(self) -> int:
        return NOW

    def neighbours(self, node_type: NodeType, node_ids: Sequence[str], *, at_ms: int | None = None
                   ) -> dict[str, dict[NodeType, dict[str, float]]]:
        assert at_ms == NOW
        self.asked.append(list(node_ids))
        out = {}
        for node in node_ids:
            edges = self.rows.get(f"{node_type.value.lower()}:{node}")
            if edges:
                out[node] = group_edges(edges, NOW, self.half_life_ms)
        return out


class FakeCache:
    def __init__(self, rows: Mapping[str, dict[str, Edge]]) -> None:
        self.rows = rows

    def peek(self, key: str) -> dict[str, Edge] | None:
        edges = self.rows.get(key)
        return None if edges is None else dict(edges)


def test_the_reader_takes_cached_rows_and_asks_the_store_only_for_the_rest() -> None:
    store = FakeStore({"pin:p2": {"pin:a": Edge(2.0, NOW)}, "pin:p1": {"pin:stale": Edge(9.0, NOW)}})
    cache = FakeCache({"pin:p1": {"pin:a": Edge(4.0, NOW), "board:b1": Edge(1.0, NOW)}, "pin:new": {}})
    reader = CachedGraphReader(store, cache)

    got = reader.neighbours(NodeType.PIN, ["p1", "p2", "new", "gone"])

    # p1 from the cache (the store's older copy unseen), p2 from the store, "new" cached and
    # empty (absent, as an unknown node), "gone" unknown to both.
    assert got == {"p1": {NodeType.PIN: {"a": 4.0}, NodeType.BOARD: {"b1": 1.0}},
                   "p2": {NodeType.PIN: {"a": 2.0}}}
    assert store.asked == [["p2", "gone"]]


def test_the_strongest_related_pins_match_a_full_sort_of_the_decayed_row() -> None:
    rng = random.Random(5)
    now = 1_800_000_000_000
    params = PatchParams({InteractionAction.SAVE: 2.0}, related=10)
    for _ in range(50):
        row: dict[str, Edge] = {}
        for i in range(rng.randrange(0, 400)):
            kind = rng.choice(["pin", "pin", "pin", "board", "user"])
            # equal weights and times now and then: ties go by pin id
            weight = rng.choice([1.0, 2.0, rng.uniform(-1.0, 5.0)])
            age = rng.choice([0, 86_400_000, rng.randrange(10**10)])
            row[f"{kind}:{i % 97}-{i}"] = Edge(weight, now - age)
        decayed = [(edge.at(now, params.half_life_ms), column[4:]) for column, edge in row.items()
                   if column.startswith("pin:") and edge.weight > 0]
        expected = sorted(decayed, key=lambda x: (-x[0], x[1]))[:10]
        got = _related(row, params, now)
        assert [pin for pin, _ in got] == [pin for _, pin in expected]
        if expected:
            assert [share for _, share in got] == [w / expected[0][0] for w, _ in expected]


def test_related_pins_are_computed_once_per_row_version_and_give_the_uncached_plan() -> None:
    cache = RelatedCache(max_pins=3)
    rows = dict(ROWS)
    batch = [act("u1", "p1", InteractionAction.SAVE), act("u2", "p2", InteractionAction.CLICK)]
    uncached = plan_patches(batch, rows_of(rows), PARAMS, NOW)
    assert plan_patches(batch, rows_of(rows), PARAMS, NOW, cache) == uncached
    # An hour later, rows unchanged: the same lifts, read from the cache.
    assert plan_patches(batch, rows_of(rows), PARAMS, NOW + 3_600_000, cache) == uncached
    assert (cache.hits, cache.misses) == (2, 2)
    # A new version of p1's row (rows are replaced, never changed in place) is computed again.
    rows["pin:p1"] = {**ROWS["pin:p1"], "pin:d": Edge(9.0, NOW)}
    [changed, _] = plan_patches(batch, rows_of(rows), PARAMS, NOW, cache)
    assert changed.patch.lift[0] == ("d", 1.0, "live:p1") and cache.misses == 3
    # Bounded: a fourth pin starts the cache over.
    for pin in ("p3", "p4"):
        rows[f"pin:{pin}"] = {"pin:a": Edge(1.0, NOW)}
        plan_patches([act("u1", pin, InteractionAction.SAVE)], rows_of(rows), PARAMS, NOW, cache)
    assert len(cache._entries) == 1


def test_a_pin_the_user_engaged_long_ago_is_lifted_again_once_its_weight_decayed() -> None:
    rows = {**ROWS, "user:u1": {"pin:b": Edge(1.0, NOW - 4 * 7 * 86_400_000)}}  # four half-lives
    [planned] = plan_patches([act("u1", "p1", InteractionAction.SAVE)], rows_of(rows), PARAMS, NOW)
    assert [pin for pin, _, _ in planned.patch.lift] == ["a", "b", "c"]


def test_a_related_list_is_reused_for_a_while_though_the_row_was_replaced() -> None:
    cache = RelatedCache(reuse_ms=2_000)
    rows = dict(ROWS)
    batch = [act("u1", "p1", InteractionAction.SAVE)]
    [first] = plan_patches(batch, rows_of(rows), PARAMS, NOW, cache)
    rows["pin:p1"] = {**ROWS["pin:p1"], "pin:d": Edge(9.0, NOW)}  # a push replaced the row
    # Within the reuse window: the list computed from the earlier row, and no computation.
    [soon] = plan_patches(batch, rows_of(rows), PARAMS, NOW + 1_999, cache)
    assert soon.patch.lift == first.patch.lift and (cache.hits, cache.misses) == (1, 1)
    # Past it: computed again from the row as it is now.
    [later] = plan_patches(batch, rows_of(rows), PARAMS, NOW + 2_000, cache)
    assert later.patch.lift[0] == ("d", 1.0, "live:p1") and cache.misses == 2
    # A clock that went back does not stretch the window.
    rows["pin:p1"] = dict(ROWS["pin:p1"])
    [back] = plan_patches(batch, rows_of(rows), PARAMS, NOW - 1, cache)
    assert back.patch.lift == first.patch.lift and cache.misses == 3
