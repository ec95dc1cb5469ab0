"""Random walks and ranking on small hand-made graphs: determinism, weighted steps, multi-hit
boosting, early stopping, the deadline, pooled similarity and the feed's filters and cap."""

from __future__ import annotations

from itertools import count

import numpy as np
import pytest

from processors.ranking import (
    EmbeddingTable,
    Neighbourhood,
    RankParams,
    UserPins,
    candidate_mask,
    cf_scores,
    combine,
    pooled_similarity,
    top_items,
)
from processors.walks import (
    RankerDeadlineExceeded,
    WalkGraph,
    WalkParams,
    WalkResult,
    random_walks,
    walk_seed,
)
from streams.errors import ConfigError


def ring_of_boards(boards: int = 30, pins_per_board: int = 12) -> dict[str, dict[str, float]]:
    """Boards b0..bN, each sharing half its pins with the next board: a connected graph."""
    rows: dict[str, dict[str, float]] = {}
    for b in range(boards):
        first = b * pins_per_board // 2
        rows[f"b{b}"] = {f"p{(first + i) % (boards * pins_per_board // 2)}": 1.0 + (i % 3)
                         for i in range(pins_per_board)}
    return rows


def walk(graph: WalkGraph, query: dict[str, float], params: WalkParams, seed: int = 1,
         user: str = "u1") -> WalkResult:
    return random_walks(graph, [graph.pin_index[p] for p in query], list(query.values()), params,
                        walk_seed(seed, user))


def test_walks_are_deterministic_under_a_seed() -> None:
    graph = WalkGraph.from_board_pins(ring_of_boards())
    query = {"p0": 2.0, "p40": 1.0}
    params = WalkParams(steps=5000, high_pins=10_000)

    first = random_walks(graph, [0, graph.pin_index["p40"]], list(query.values()), params, walk_seed(7, "u1"))
    again = random_walks(graph, [0, graph.pin_index["p40"]], list(query.values()), params, walk_seed(7, "u1"))
    other = random_walks(graph, [0, graph.pin_index["p40"]], list(query.values()), params, walk_seed(8, "u1"))

    assert np.array_equal(first.boosted, again.boosted)
    assert np.array_equal(first.board_visits, again.board_visits)
    assert first.steps == again.steps >= 5000
    assert not np.array_equal(first.visits, other.visits)


def test_the_same_board_rows_in_another_order_give_the_same_walks() -> None:
    rows = ring_of_boards()
    shuffled = dict(reversed(list(rows.items())))
    params = WalkParams(steps=3000)
    a = walk(WalkGraph.from_board_pins(rows), {"p0": 1.0}, params)
    b = walk(WalkGraph.from_board_pins(shuffled), {"p0": 1.0}, params)
    assert np.array_equal(a.board_visits, b.board_visits)


def test_steps_take_edges_in_proportion_to_their_weights() -> None:
    graph = WalkGraph.from_board_pins({"light": {"q": 1.0, "x": 1.0}, "heavy": {"q": 3.0, "y": 1.0}})
    result = random_walks(graph, [graph.pin_index["q"]], [1.0], WalkParams(steps=40_000, restart=0.99),
                          walk_seed(0, "u"))
    light, heavy = (result.board_visits[graph.board_ids.index(b)] for b in ("light", "heavy"))
    assert heavy / light == pytest.approx(3.0, rel=0.1)


def test_multi_hit_boosting_favours_a_pin_reached_from_several_query_pins() -> None:
    # From q1, `a` is three times as likely as `s`; `s` is also reached from q2. Raw visits favour
    # `a`, boosting (sum of square roots, squared) favours `s`.
    graph = WalkGraph.from_board_pins({"A": {"q1": 1.0, "a": 3.0, "s": 1.0},
                                       "B": {"q2": 1.0, "s": 1.0, "c": 1.0}})
    result = random_walks(graph, [graph.pin_index["q1"], graph.pin_index["q2"]], [1.0, 1.0],
                          WalkParams(steps=40_000, restart=0.99, high_pins=10_000), walk_seed(0, "u"))
    a, s = graph.pin_index["a"], graph.pin_index["s"]
    assert result.visits[a] > result.visits[s]
    assert result.boosted[s] > result.boosted[a]
    assert (result.boosted >= result.visits).all()  # (sum of roots)^2 >= sum: boosting only adds


def test_walks_stop_early_once_enough_pins_are_well_visited() -> None:
    graph = WalkGraph.from_board_pins(ring_of_boards(boards=6, pins_per_board=6))
    budget = 200_000
    early = random_walks(graph, [0], [1.0], WalkParams(steps=budget, high_visits=4, high_pins=5),
                         walk_seed(0, "u"))
    full = random_walks(graph, [0], [1.0], WalkParams(steps=budget, high_visits=4, high_pins=10_000),
                        walk_seed(0, "u"))
    assert early.stopped_early == 1 and early.steps < budget // 10
    assert (early.visits >= 4).sum() > 5
    assert full.stopped_early == 0 and full.steps >= budget


def test_walks_past_the_deadline_raise() -> None:
    graph = WalkGraph.from_board_pins(ring_of_boards())
    ticks = count()
    with pytest.raises(RankerDeadlineExceeded) as caught:
        random_walks(graph, [0], [1.0], WalkParams(steps=100_000, high_pins=10_000), walk_seed(0, "u"),
                     deadline=3.0, clock=lambda: float(next(ticks)))
    assert caught.value.stage == "feed" and caught.value.reason == "deadline"


def test_query_pins_without_boards_or_weight_are_skipped() -> None:
    graph = WalkGraph.from_board_pins({"A": {"q": 1.0, "x": 1.0}}, extra_pins=["lonely"])
    result = random_walks(graph, [graph.pin_index["lonely"], graph.pin_index["q"]], [5.0, 0.0],
                          WalkParams(steps=1000), walk_seed(0, "u"))
    assert result.steps == 0 and not result.visits.any()


def test_walk_parameters_are_validated() -> None:
    with pytest.raises(ConfigError):
        WalkParams(restart=1.0)
    with pytest.raises(ConfigError):
        RankParams(embedding_weight=1.5)


def test_user_pins_split_into_query_engaged_and_hidden() -> None:
    pins = UserPins.of({"saved": 4.0, "clicked": 1.0, "old": 0.2, "hidden": -8.0}, 2, 0.5)
    assert list(pins.query) == ["saved", "clicked"]
    assert pins.engaged == {"saved", "clicked"}  # "old" decayed below a click: may be shown again
    assert pins.hidden == {"hidden"}


def test_cf_scores_are_two_hop_probabilities() -> None:
    boards = {"A": {"q": 1.0, "x": 1.0, "y": 2.0}}
    graph = WalkGraph.from_board_pins(boards, extra_pins=["co"])
    cf = cf_scores(graph, {"q": 1.0}, {"q": {"A": 1.0}}, {"q": {"co": 3.0}})
    score = dict(zip(graph.pin_ids, cf, strict=True))
    assert score["co"] == pytest.approx(0.5)  # half the mass along co-engagement
    assert score["y"] == pytest.approx(2 * score["x"])
    assert sum(score.values()) == pytest.approx(1.0)


def test_candidate_cap_keeps_the_best_and_never_excluded_pins() -> None:
    cf = np.array([0.5, 0.4, 0.3, 0.3, 0.0, 0.9])
    excluded = np.array([False, False, False, False, False, True])
    mask = candidate_mask(cf, excluded, 3, also=np.array([False, False, False, False, True, True]))
    assert mask.tolist() == [True, True, True, False, True, False]


def test_pooled_similarity_gives_pins_without_embeddings_their_neighbours_score() -> None:
    graph = WalkGraph.from_board_pins({"A": {"x": 1.0, "y": 1.0, "z": 1.0}})
    index = {p: i for i, p in enumerate(graph.pin_ids)}
    sims = np.zeros(3)
    sims[index["x"]], sims[index["y"]] = 0.8, 0.2
    found = np.array([p != "z" for p in graph.pin_ids])
    visits = np.ones(3)
    visits[index["x"]] = 3.0
    score, has = pooled_similarity(graph, sims, found, visits, neighbour_weight=1.0)
    assert has.all()
    assert score[index["z"]] == pytest.approx((3 * 0.8 + 0.2) / 4)  # importance-weighted neighbours
    assert score[index["x"]] == pytest.approx((0.8 + 0.2) / 2)  # own cosine mixed with y's


def test_top_items_filter_cap_and_name_a_reason() -> None:
    hood = Neighbourhood(UserPins.of({"q": 4.0}, 10, 0.5), {"q": {"A": 1.0, "B": 1.0}}, {},
                         {"A": {"q": 1.0, "a1": 1.0, "a2": 1.0, "hid": 1.0},
                          "B": {"q": 1.0, "b1": 1.0, "b2": 1.0}})
    graph = WalkGraph.from_board_pins(hood.board_pins)
    walks = random_walks(graph, [graph.pin_index["q"]], [4.0], WalkParams(steps=4000), walk_seed(0, "u"))
    cf = cf_scores(graph, hood.pins.query, hood.pin_boards, hood.co_engaged)
    excluded = np.array([p in {"q", "hid", "b2"} for p in graph.pin_ids])
    scored = combine(graph, walks, cf, RankParams())
    items = top_items(scored, candidate_mask(cf, excluded, 100), 2, graph=graph, walks=walks)
    assert len(items) == 2
    assert {i.pin_id for i in items} <= {"a1", "a2", "b1"}
    assert items[0].score >= items[1].score
    assert all(i.reason in ("walk:board A", "walk:board B") for i in items)


def test_embedding_table_cosine_by_gather_and_by_full_pass() -> None:
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(40)]
    table = EmbeddingTable(ids, rng.standard_normal((40, 8)))
    query = table.matrix[3]
    few, found_few = table.cosine(["p3", "nope"], query)
    many, found_many = table.cosine(ids[:30], query)
    assert found_few.tolist() == [True, False] and few[0] == pytest.approx(1.0)
    assert found_many.all() and many[3] == pytest.approx(1.0) and (many <= 1.0 + 1e-6).all()
