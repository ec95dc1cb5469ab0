"""The feed with fakes of its sources: ranked pins with reasons, and each fallback triggered,
named in the result and counted (deadline, graph down, too few candidates, no embeddings, cache down)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import count

import numpy as np
import pytest

from processors.feed import FeedComputer, FeedParams, FeedService, Neighbours
from processors.ranking import BoolArray, EmbeddingTable, RankParams, Vector
from processors.reconcile_events import build_reconciliation
from processors.walks import FloatArray, WalkParams
from streams.errors import SinkError
from streams.events import Fallback, FeedItem, FeedUpdated, NodeType, Stage
from streams.metrics import REGISTRY

USER = "u1"


class FakeGraph:
    """Two interest areas: boards A and B next to the user's pins, board C beyond them."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.rows: dict[NodeType, dict[str, dict[NodeType, dict[str, float]]]] = {
            NodeType.USER: {USER: {NodeType.PIN: {"q1": 4.0, "q2": 1.0, "gone": -8.0, "seen": 0.1}}},
            NodeType.PIN: {"q1": {NodeType.BOARD: {"A": 1.0}, NodeType.PIN: {"co1": 2.0}},
                           "q2": {NodeType.BOARD: {"B": 1.0}}},
            NodeType.BOARD: {
                "A": {NodeType.PIN: {"q1": 1.0, **{f"a{i}": 1.0 + i % 3 for i in range(8)}, "gone": 1.0}},
                "B": {NodeType.PIN: {"q2": 1.0, **{f"b{i}": 1.0 for i in range(5)}, "seen": 1.0}},
            },
        }
        self.reads = 0

    def neighbours(self, node_type: NodeType, node_ids: Sequence[str]) -> dict[str, Neighbours]:
        self.reads += 1
        if self.down:
            raise SinkError("graph table unreachable", dependency="hbase", retry_after=5.0)
        table = self.rows[node_type]
        return {node: table[node] for node in node_ids if node in table}


def embeddings(missing: Collection[str] = ()) -> EmbeddingTable:
    rng = np.random.default_rng(3)
    pins = ["q1", "q2", "co1", "seen", "gone", *(f"a{i}" for i in range(8)), *(f"b{i}" for i in range(5)),
            "vis1"]
    pins = [p for p in pins if p not in missing]
    return EmbeddingTable(pins, rng.standard_normal((len(pins), 16)))


class FakeEmbeddings:
    def __init__(self, table: EmbeddingTable, *, down: bool = False) -> None:
        self.table, self.down = table, down

    def vectors(self, pin_ids: Sequence[str]) -> Mapping[str, Vector]:
        if self.down:
            raise SinkError("no vectors", dependency="hbase")
        return self.table.vectors(pin_ids)

    def cosine(self, pin_ids: Sequence[str], query: Vector) -> tuple[FloatArray, BoolArray]:
        return self.table.cosine(pin_ids, query)


class FakeSimilar:
    def search(self, queries: Vector, k: int) -> list[list[tuple[str, float]]]:
        return [[("vis1", 0.9), ("q1", 0.8)][:k]]


class FakeCache:
    """Trending, preferences and the feed store in memory; `down` makes every call fail."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.feeds: dict[str, list[FeedItem]] = {}
        self.prefs: dict[str, list[tuple[str, float]]] = {USER: [("a3", 0.9), ("pref1", 0.7), ("a1", 0.5)]}
        self.popular = [("hot1", 9.0), ("a0", 8.0), ("gone", 7.0), ("hot2", 6.0), ("hot3", 5.0)]
        self.writes = 0

    def _check(self) -> None:
        if self.down:
            raise SinkError("Redis read_feed failed: ConnectionError", dependency="redis", retry_after=1.0)

    def trending(self, limit: int) -> list[tuple[str, float]]:
        self._check()
        return self.popular[:limit]

    def preferences(self, user_id: str) -> list[tuple[str, float]]:
        self._check()
        return self.prefs.get(user_id, [])

    def write_feeds(self, feeds: Sequence[FeedUpdated],
                    preferences: Mapping[str, Sequence[tuple[str, float]]] | None = None) -> None:
        self._check()
        self.writes += 1
        self.feeds.update({f.user_id: list(f.items) for f in feeds})
        self.prefs.update({u: list(s) for u, s in (preferences or {}).items()})

    def read_feed(self, user_id: str, offset: int = 0, count: int | None = None) -> list[FeedItem] | None:
        self._check()
        feed = self.feeds.get(user_id)
        return None if feed is None else feed[offset: None if count is None else offset + count]


def params(size: int = 6) -> FeedParams:
    return FeedParams(rank=RankParams(size=size, embedding_weight=0.3), walk=WalkParams(steps=3000),
                      deadline_s=60.0, preference_pins=10)


def fallback_count(fallback: Fallback) -> float:
    return REGISTRY.get_sample_value("pinstream_feed_fallbacks_total", {"fallback": str(fallback)}) or 0.0


def computer(graph: FakeGraph | None = None, cache: FakeCache | None = None, *, size: int = 6,
             embedded: bool = True, similar: FakeSimilar | None = None,
             clock: Callable[[], float] = time.perf_counter) -> FeedComputer:
    cache = cache or FakeCache()
    return FeedComputer(graph or FakeGraph(), embeddings=FakeEmbeddings(embeddings()) if embedded else None,
                        similar=similar, trending=cache, preferences=cache, params=params(size), clock=clock)


def test_a_full_feed_is_ranked_with_reasons_and_no_fallback() -> None:
    result = computer(size=6).compute(USER)

    assert result.fallbacks == ()
    assert result.model == "pixie-pinsage-1"
    assert len(result.items) == 6  # capped at the feed size
    scores = [item.score for item in result.items]
    assert scores == sorted(scores, reverse=True)
    assert all(item.reason.startswith(("walk:board ", "similar", "cf")) for item in result.items)
    assert {item.reason for item in result.items} & {"walk:board A", "walk:board B"}
    assert result.candidates >= 14
    assert len(result.preferences) == 10  # more than the feed: the fallback survives served pins
    assert result.timings_ms["total"] >= result.timings_ms["walk"] > 0


def test_the_same_inputs_give_the_same_feed() -> None:
    assert computer().compute(USER).items == computer().compute(USER).items


def test_hidden_served_and_engaged_pins_are_never_served() -> None:
    result = computer(size=50).compute(USER, served={"a0", "a1"}, hidden={"b0"})
    pins = {item.pin_id for item in result.items}
    assert not pins & {"a0", "a1", "b0", "gone", "q1", "q2"}
    assert "seen" in pins  # only scrolled past: may be shown again


def test_ranker_over_its_deadline_serves_co_engagement_scores() -> None:
    ticks = count()
    before = fallback_count(Fallback.RANKER_TIMEOUT_CF)
    result = computer(clock=lambda: 100.0 * next(ticks)).compute(USER)  # 60 s deadline, 100 s per look

    assert Fallback.RANKER_TIMEOUT_CF in result.fallbacks
    assert result.items and all(item.reason == "cf" for item in result.items)
    assert result.items[0].pin_id == "co1"  # the co-engaged pin of the heaviest query pin
    assert fallback_count(Fallback.RANKER_TIMEOUT_CF) == before + 1


def test_time_waited_in_pauses_counts_neither_to_the_deadline_nor_in_the_timings() -> None:
    # A fake clock: each reading moves 1 s, and each pause (run on every reading) waits 100 s: a
    # 60 s deadline would pass at the second reading if the waits counted.
    now = [0.0]
    pauses = []

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    def pause() -> float:
        now[0] += 100.0
        pauses.append(now[0])
        return 100.0

    result = computer(clock=clock).compute(USER, pause=pause)

    assert len(pauses) >= 4  # between the stages and at every walk round
    assert Fallback.RANKER_TIMEOUT_CF not in result.fallbacks
    assert result.items == computer().compute(USER).items  # the same feed, paused or not
    assert result.timings_ms["total"] < 60_000  # 1 s per reading, not 100 s per pause


def test_graph_store_down_serves_cached_preferences() -> None:
    before = fallback_count(Fallback.CACHED_PREFERENCES)
    result = computer(FakeGraph(down=True), size=3).compute(USER, served={"pref1"})

    assert result.fallbacks == (Fallback.CACHED_PREFERENCES, Fallback.TRENDING_FILL)
    assert [(i.pin_id, i.reason) for i in result.items] == [("a3", "prefs"), ("a1", "prefs"),
                                                             ("hot1", "trending")]
    assert result.preferences == ()  # nothing new to cache: the old preferences stay
    assert fallback_count(Fallback.CACHED_PREFERENCES) == before + 1


def test_graph_and_cache_both_down_is_an_empty_feed_that_says_so() -> None:
    result = computer(FakeGraph(down=True), FakeCache(down=True)).compute(USER)
    assert result.items == () and result.fallbacks == (Fallback.CACHED_PREFERENCES,)


def test_too_few_candidates_are_filled_with_trending_pins_below_the_ranked_ones() -> None:
    before = fallback_count(Fallback.TRENDING_FILL)
    result = computer(size=20).compute(USER, served={"a0"})

    ranked = [i for i in result.items if i.reason != "trending"]
    filled = [i for i in result.items if i.reason == "trending"]
    assert Fallback.TRENDING_FILL in result.fallbacks
    assert [i.pin_id for i in filled] == ["hot1", "hot2", "hot3"]  # not a0 (served), not gone (hidden)
    assert min(i.score for i in ranked) > max(i.score for i in filled)
    assert len({i.pin_id for i in result.items}) == len(result.items)
    assert fallback_count(Fallback.TRENDING_FILL) == before + 1


def test_a_user_without_engagement_gets_trending_pins() -> None:
    result = computer(size=3).compute("newcomer")
    assert [i.pin_id for i in result.items] == ["hot1", "a0", "gone"]
    assert result.fallbacks == (Fallback.NO_EMBEDDINGS, Fallback.TRENDING_FILL)


@pytest.mark.parametrize("how", ["no lookup", "lookup down", "no query pin embedded"])
def test_without_embeddings_the_walks_rank_alone(how: str) -> None:
    before = fallback_count(Fallback.NO_EMBEDDINGS)
    if how == "no lookup":
        feeds = computer(embedded=False)
    else:
        table = embeddings(missing=("q1", "q2", "seen") if how == "no query pin embedded" else ())
        feeds = FeedComputer(FakeGraph(), embeddings=FakeEmbeddings(table, down=how == "lookup down"),
                             trending=FakeCache(), params=params())
    result = feeds.compute(USER)

    assert result.fallbacks == (Fallback.NO_EMBEDDINGS,)
    assert result.model == "pixie-1"
    assert len(result.items) == 6 and all(i.reason.startswith(("walk:", "cf")) for i in result.items)
    assert fallback_count(Fallback.NO_EMBEDDINGS) == before + 1


def test_visually_similar_pins_join_the_candidates() -> None:
    result = computer(size=50, similar=FakeSimilar()).compute(USER)
    reasons = {i.pin_id: i.reason for i in result.items}
    assert reasons["vis1"] == "similar"
    assert "q1" not in reasons  # an ANN hit the user engaged with stays out


def test_refresh_caches_feeds_and_preferences_in_one_write() -> None:
    cache = FakeCache()
    results = FeedService(computer(cache=cache), cache).refresh([USER, "newcomer", USER])

    assert [r.user_id for r in results] == [USER, "newcomer"]
    assert cache.writes == 1
    assert cache.feeds[USER] == list(results[0].items)
    assert len(cache.prefs[USER]) == 10
    assert not any(r.needs_reconciliation for r in results)


def test_cache_down_serves_uncached_and_asks_for_a_reconciliation() -> None:
    cache = FakeCache()
    service = FeedService(computer(cache=cache), cache)
    cache.down = True
    before = fallback_count(Fallback.UNCACHED)

    refreshed = service.refresh([USER])[0]
    read = service.read(USER, count=2)

    for result in (refreshed, read):
        assert result.fallbacks[-1] is Fallback.UNCACHED and result.needs_reconciliation
        assert result.cache_error is not None and result.cache_error.dependency == "redis"
    assert len(read.items) == 2
    assert refreshed.event().fallbacks[-1] is Fallback.UNCACHED
    assert refreshed.cache_error is not None
    record = build_reconciliation(refreshed.cache_error, stage=Stage.FEED, entity_type="feed",
                                  entity_id=USER, payload=None)
    assert record.dependency == "redis" and record.entity_id == USER
    assert fallback_count(Fallback.UNCACHED) == before + 2


def test_read_serves_the_cache_and_computes_on_a_miss() -> None:
    cache = FakeCache()
    graph = FakeGraph()
    service = FeedService(computer(graph, cache), cache)

    first = service.read(USER, offset=1, count=2)
    reads_after_miss = graph.reads
    second = service.read(USER, offset=1, count=2)

    assert not first.from_cache and second.from_cache
    assert second.items == first.items and len(first.items) == 2
    assert graph.reads == reads_after_miss  # the hit did not touch the graph
    assert second.fallbacks == ()
