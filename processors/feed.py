"""Home feeds: a user's 2-hop candidates from the graph, ranked by walks and embeddings, with every
fallback named in the result; `FeedService` adds the Redis cache (read first, compute on a miss)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from prometheus_client import Counter, Histogram

from processors.ranking import (
    BoolArray,
    Candidates,
    Neighbourhood,
    RankParams,
    UserPins,
    Vector,
    best,
    cf_items,
    combine,
    taste_vector,
    top_items,
)
from processors.walks import (
    FloatArray,
    IntArray,
    RankerDeadlineExceeded,
    WalkParams,
    WalkResult,
    random_walks,
    walk_seed,
)
from streams.errors import SinkError
from streams.events import Fallback, FeedItem, FeedUpdated, NodeType
from streams.metrics import REGISTRY
from streams.settings import Settings

log = logging.getLogger(__name__)

FEED_SECONDS = Histogram(
    "pinstream_feed_seconds", "Feed computation by stage: fetch, candidates, walk, score, total.", ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
FEED_FALLBACKS = Counter("pinstream_feed_fallbacks_total", "Feeds served with a fallback, by fallback.",
                         ["fallback"], registry=REGISTRY)
FEED_READS = Counter("pinstream_feed_reads_total", "Feed reads by outcome: hit, miss, error.",
                     ["outcome"], registry=REGISTRY)
FEED_EMBEDDED = Histogram(
    "pinstream_feed_embedded_share", "Share of a feed's shortlisted pins that had an embedding "
    "(below 1: the others were ranked by walks alone).",
    buckets=(0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0), registry=REGISTRY,
)
for _fallback in Fallback:  # counters start at 0, so that increase() alerts see the first one
    FEED_FALLBACKS.labels(str(_fallback))
for _outcome in ("hit", "miss", "error"):
    FEED_READS.labels(_outcome)

# What ranked a feed when a fallback did (the first that applies names the model).
_FALLBACK_MODELS = ((Fallback.CACHED_PREFERENCES, "cached-preferences"), (Fallback.RANKER_TIMEOUT_CF, "cf-1"),
                    (Fallback.NO_EMBEDDINGS, "pixie-1"))
Neighbours = Mapping[NodeType, Mapping[str, float]]
Scores = Sequence[tuple[str, float]]


class GraphReader(Protocol):
    """Weighted neighbours of graph nodes, grouped by the neighbour's type (the graph store)."""

    def neighbours(self, node_type: NodeType, node_ids: Sequence[str]) -> Mapping[str, Neighbours]:
        """Each known node's neighbours; unknown nodes are absent; SinkError when unavailable."""
        ...


class EmbeddingLookup(Protocol):
    def vectors(self, pin_ids: Sequence[str]) -> Mapping[str, Vector]: ...

    def cosine(self, pin_ids: Sequence[str], query: Vector) -> tuple[FloatArray, BoolArray]:
        """Cosine of each pin with `query` (unit), and whether the pin has an embedding."""
        ...


class SimilarPins(Protocol):
    """Approximate nearest neighbours of query vectors (the ANN index fits as it is)."""

    def search(self, queries: Vector, k: int) -> Sequence[Sequence[tuple[str, float]]]: ...


class TrendingSource(Protocol):
    def trending(self, limit: int) -> Scores: ...


class PreferenceSource(Protocol):
    def preferences(self, user_id: str) -> Scores: ...


class FeedStore(Protocol):
    def write_feeds(self, feeds: Sequence[FeedUpdated],
                    preferences: Mapping[str, Scores] | None = None) -> None: ...

    def read_feed(self, user_id: str, offset: int = 0, count: int | None = None) -> list[FeedItem] | None: ...


@dataclass(frozen=True, slots=True)
class FeedParams:
    rank: RankParams = field(default_factory=RankParams)
    walk: WalkParams = field(default_factory=WalkParams)
    deadline_s: float = 0.1
    seed: int = 0
    similar_k: int = 200  # ANN neighbours of the taste vector added as candidates
    # Pins whose embeddings are read and scored: the best by walks and co-engagement (plus the
    # ANN candidates). The pooling needs the visited neighbours' cosines, and reading ~10k
    # vectors from the index costs more than the rest of the ranking.
    embedding_shortlist: int = 2000
    preference_pins: int = 400  # ranked pins cached per user for the graph-down fallback
    model: str = "pixie-pinsage-1"

    @classmethod
    def from_settings(cls, settings: Settings) -> FeedParams:
        return cls(
            rank=RankParams(size=settings.feed_size, embedding_weight=settings.feed_embedding_weight,
                            max_candidates=settings.feed_max_candidates,
                            max_query_pins=settings.feed_max_query_pins,
                            max_boards=settings.feed_max_boards),
            walk=WalkParams(steps=settings.feed_walk_steps, restart=settings.feed_walk_restart,
                            high_visits=settings.feed_walk_high_visits,
                            high_pins=settings.feed_walk_high_pins),
            deadline_s=settings.feed_ranker_deadline_ms / 1000, seed=settings.feed_seed,
            preference_pins=2 * settings.feed_size,
            embedding_shortlist=settings.feed_embedding_shortlist,
        )


@dataclass(frozen=True, slots=True)
class FeedResult:
    """One user's feed, how it was made, and what the caller still owes (reconciliation)."""

    user_id: str
    items: tuple[FeedItem, ...]
    model: str
    fallbacks: tuple[Fallback, ...] = ()
    candidates: int = 0
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    preferences: tuple[tuple[str, float], ...] = ()  # to cache for the graph-down fallback
    from_cache: bool = False
    cache_error: SinkError | None = None  # Redis failed: emit a reconciliation for this feed

    @property
    def needs_reconciliation(self) -> bool:
        return self.cache_error is not None

    def event(self) -> FeedUpdated:
        return FeedUpdated(user_id=self.user_id, items=self.items, model=self.model,
                           fallbacks=self.fallbacks)

    def uncached(self, error: SinkError) -> FeedResult:
        FEED_FALLBACKS.labels(str(Fallback.UNCACHED)).inc()
        return dataclasses.replace(self, fallbacks=(*self.fallbacks, Fallback.UNCACHED), cache_error=error)

    def page(self, offset: int, count: int | None) -> FeedResult:
        end = None if count is None else offset + count
        return dataclasses.replace(self, items=self.items[offset:end])


def fetch_neighbourhood(graph: GraphReader, user_id: str, params: RankParams) -> Neighbourhood:
    """Three reads: the user's pins, those pins' boards and co-engaged pins, those boards' pins."""
    user_row = graph.neighbours(NodeType.USER, [user_id]).get(user_id, {})
    pins = UserPins.of(user_row.get(NodeType.PIN, {}), params.max_query_pins, params.min_engaged_weight)
    if not pins.query:
        return Neighbourhood(pins, {}, {}, {})
    pin_rows = graph.neighbours(NodeType.PIN, list(pins.query))
    pin_boards = {q: row.get(NodeType.BOARD, {}) for q, row in pin_rows.items()}
    co_engaged = {q: row.get(NodeType.PIN, {}) for q, row in pin_rows.items()}
    boards = heaviest_boards(pins.query, pin_boards, params.max_boards)
    board_rows = graph.neighbours(NodeType.BOARD, boards) if boards else {}
    return Neighbourhood(pins, pin_boards, co_engaged,
                         {b: row.get(NodeType.PIN, {}) for b, row in board_rows.items()})


def heaviest_boards(query: Mapping[str, float], pin_boards: Mapping[str, Mapping[str, float]],
                    limit: int) -> list[str]:
    """The `limit` boards a first walk step most likely reaches (sorted by id): popular pins sit
    on thousands of boards, and reading and walking them all would blow the feed's latency."""
    total = sum(query.values()) or 1.0
    mass: dict[str, float] = {}
    for q, row in pin_boards.items():
        positive = {b: w for b, w in row.items() if w > 0}
        row_total = sum(positive.values())
        for b, w in positive.items():
            mass[b] = mass.get(b, 0.0) + query.get(q, 0.0) / total * w / row_total
    return sorted(sorted(mass, key=lambda b: (-mass[b], b))[:limit])


def _pausing_clock(clock: Callable[[], float], pause: Callable[[], float]) -> Callable[[], float]:
    """`clock` less the time spent in `pause`, which runs on every reading."""
    waited = 0.0

    def read() -> float:
        nonlocal waited
        waited += pause()
        return clock() - waited

    return read


class FeedComputer:
    """Computes feeds from the graph; every optional source may be None (and the result says so)."""

    def __init__(self, graph: GraphReader, *, embeddings: EmbeddingLookup | None = None,
                 similar: SimilarPins | None = None, trending: TrendingSource | None = None,
                 preferences: PreferenceSource | None = None, params: FeedParams | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.graph = graph
        self.embeddings = embeddings
        self.similar = similar
        self.trending = trending
        self.preferences = preferences
        self.params = params or FeedParams()
        self.clock = clock

    def compute(self, user_id: str, *, served: Collection[str] = (), hidden: Collection[str] = (),
                pause: Callable[[], float] | None = None) -> FeedResult:
        """The ranked feed of `user_id` without `served` and `hidden` pins (nor any hidden before).

        `pause`, when given, is called between stages and between walk rounds; it may block (a
        worker's re-rank waits there while an interaction batch holds the interpreter) and
        returns the seconds it waited, which count neither in the timings nor to the deadline."""
        clock = self.clock if pause is None else _pausing_clock(self.clock, pause)
        started = clock()
        timings: dict[str, float] = {}
        try:
            hood = fetch_neighbourhood(self.graph, user_id, self.params.rank)
        except SinkError as exc:
            log.warning("graph unavailable for the feed of %s, serving cached preferences: %s", user_id, exc)
            timings["fetch"] = clock() - started
            exclude = set(served) | set(hidden)
            items = self._from_preferences(user_id, exclude)
            fallbacks = [Fallback.CACHED_PREFERENCES]
            ranked: list[FeedItem] = []
            candidates = len(items)
        else:
            timings["fetch"] = clock() - started
            exclude = set(served) | set(hidden) | hood.pins.engaged | hood.pins.hidden
            ranked, candidates, fallbacks, timings_rank = self._rank(user_id, hood, exclude, clock)
            timings.update(timings_rank)
            items = ranked[:self.params.rank.size]
        if len(items) < self.params.rank.size and self._fill_with_trending(items, exclude):
            fallbacks.append(Fallback.TRENDING_FILL)
        timings["total"] = clock() - started
        for stage, seconds in timings.items():
            FEED_SECONDS.labels(stage).observe(seconds)
        for fallback in fallbacks:
            FEED_FALLBACKS.labels(str(fallback)).inc()
        model = next((name for fallback, name in _FALLBACK_MODELS if fallback in fallbacks),
                     self.params.model)
        return FeedResult(user_id, tuple(items), model, tuple(fallbacks), candidates,
                          {k: v * 1000 for k, v in timings.items()},
                          tuple((item.pin_id, item.score) for item in ranked[:self.params.preference_pins]))

    def _rank(self, user_id: str, hood: Neighbourhood, exclude: set[str], clock: Callable[[], float]
              ) -> tuple[list[FeedItem], int, list[Fallback], dict[str, float]]:
        params = self.params
        started = clock()
        deadline = started + params.deadline_s
        size = max(params.rank.size, params.preference_pins)
        taste = self._taste(hood.pins.query)
        similar = self._similar(taste, exclude)
        found = Candidates.of(hood, exclude, similar, params.rank.max_candidates)
        graph, count = found.graph, int(found.eligible.sum())
        timings = {"candidates": clock() - started}
        try:
            query = [graph.pin_index[p] for p in hood.pins.query]
            walks = random_walks(graph, query, list(hood.pins.query.values()), params.walk,
                                 walk_seed(params.seed, user_id), deadline=deadline, clock=clock)
            timings["walk"] = clock() - started - timings["candidates"]
            sims, has_embedding = self._cosine(graph.pin_ids, self._shortlist(found, walks, similar),
                                               taste)
            if clock() > deadline:
                raise RankerDeadlineExceeded("scoring finished past the deadline")
        except RankerDeadlineExceeded as exc:
            log.info("feed of %s: %s; serving co-engagement scores", user_id, exc)
            return (cf_items(graph, found.cf, found.eligible, size), count,
                    [Fallback.RANKER_TIMEOUT_CF], timings)
        scored = combine(graph, walks, found.cf, params.rank, sims=sims, found=has_embedding)
        items = top_items(scored, found.eligible, size, graph=graph, walks=walks, similar=similar)
        timings["score"] = clock() - started - timings["candidates"] - timings["walk"]
        return items, count, [] if sims is not None else [Fallback.NO_EMBEDDINGS], timings

    def _shortlist(self, found: Candidates, walks: WalkResult, similar: Collection[str]) -> IntArray:
        """The pins worth an embedding: the best candidates or visited pins by walks and
        co-engagement (pins neither shown nor visited weigh nothing in the pooling), and the
        ANN candidates, which the walks rarely reach."""
        if self.embeddings is None:
            return np.zeros(0, dtype=np.int64)
        graph = found.graph
        preliminary = combine(graph, walks, found.cf, self.params.rank)
        chosen = best(preliminary.score, found.eligible | (walks.visits > 0), self.params.embedding_shortlist)
        extra = [graph.pin_index[p] for p in similar if p in graph.pin_index]
        return np.union1d(chosen, np.asarray(extra, dtype=np.int64))

    def taste_of(self, user_id: str) -> Vector | None:
        """The user's taste vector now (engaged pins' embeddings by edge weight), or None: the
        re-ranking hook of visual search; never raises for an unavailable store."""
        if self.embeddings is None:
            return None
        try:
            row = self.graph.neighbours(NodeType.USER, [user_id]).get(user_id, {})
        except SinkError as exc:
            log.warning("graph unavailable, no taste vector for %s: %s", user_id, exc)
            return None
        rank = self.params.rank
        return self._taste(UserPins.of(row.get(NodeType.PIN, {}), rank.max_query_pins,
                                       rank.min_engaged_weight).query)

    def _taste(self, query: Mapping[str, float]) -> Vector | None:
        if self.embeddings is None or not query:
            return None
        try:
            return taste_vector(query, self.embeddings.vectors(list(query)))
        except SinkError as exc:
            log.warning("embeddings unavailable, ranking by walks only: %s", exc)
            return None

    def _cosine(self, pin_ids: Sequence[str], needed: IntArray, taste: Vector | None
                ) -> tuple[FloatArray | None, BoolArray | None]:
        """Cosines of the `needed` pins with the taste vector, over all of `pin_ids` (0 elsewhere)."""
        if self.embeddings is None or taste is None:
            return None, None
        try:
            some, some_found = self.embeddings.cosine([pin_ids[i] for i in needed], taste)
        except SinkError as exc:
            log.warning("embeddings unavailable, ranking by walks only: %s", exc)
            return None, None
        FEED_EMBEDDED.observe(float(some_found.mean()) if some_found.size else 0.0)
        if not some_found.any():
            return None, None
        sims, found = np.zeros(len(pin_ids)), np.zeros(len(pin_ids), dtype=bool)
        sims[needed], found[needed] = some, some_found
        return sims, found

    def _similar(self, taste: Vector | None, exclude: Collection[str]) -> dict[str, float]:
        if self.similar is None or taste is None or self.params.similar_k <= 0:
            return {}
        try:
            hits = self.similar.search(taste, self.params.similar_k)
        except SinkError as exc:
            log.warning("ANN index unavailable, no visually similar candidates: %s", exc)
            return {}
        return {pin: score for pin, score in (hits[0] if hits else ()) if pin not in exclude}

    def _from_preferences(self, user_id: str, exclude: Collection[str]) -> list[FeedItem]:
        if self.preferences is None:
            return []
        try:
            cached = self.preferences.preferences(user_id)
        except SinkError as exc:
            log.warning("cached preferences of %s unavailable too: %s", user_id, exc)
            return []
        best = sorted(((s, p) for p, s in cached if p not in exclude), key=lambda x: (-x[0], x[1]))
        return [FeedItem(p, s, "prefs") for s, p in best[:self.params.rank.size]]

    def _fill_with_trending(self, items: list[FeedItem], exclude: Collection[str]) -> bool:
        """Append trending pins below every ranked one until the feed is full; True if any came."""
        if self.trending is None:
            return False
        wanted = self.params.rank.size - len(items)
        try:
            popular = self.trending.trending(wanted + len(items) + len(exclude))
        except SinkError as exc:
            log.warning("trending unavailable, the feed stays short: %s", exc)
            return False
        present = {item.pin_id for item in items}
        fill = [pin for pin, _ in popular if pin not in present and pin not in exclude][:wanted]
        # Ranked scores sit roughly in [-1, 1.1]: fillers go strictly below the lowest of them.
        floor = min((item.score for item in items), default=0.0) - 1.0
        items.extend(FeedItem(pin, round(floor - i / (len(fill) + 1), 6), "trending")
                     for i, pin in enumerate(fill))
        return bool(fill)


class FeedService:
    """The feed with its cache: reads hit Redis first; a miss or a refresh computes and caches."""

    def __init__(self, computer: FeedComputer, store: FeedStore) -> None:
        self.computer = computer
        self.store = store

    def refresh(self, user_ids: Sequence[str], *, served: Mapping[str, Collection[str]] | None = None,
                before_each: Callable[[], object] | None = None,
                pause: Callable[[], float] | None = None) -> list[FeedResult]:
        """Recompute these users' feeds and cache them in one pipeline; on a Redis failure each
        result is UNCACHED and carries the error for its reconciliation record. `before_each` runs
        before every computation, `pause` within it (`FeedComputer.compute`): a worker waits
        there while it has a batch to process."""
        results = []
        for user in dict.fromkeys(user_ids):
            if before_each is not None:
                before_each()
            results.append(self.computer.compute(user, served=(served or {}).get(user, ()), pause=pause))
        preferences = {r.user_id: r.preferences for r in results if r.preferences}
        try:
            self.store.write_feeds([r.event() for r in results], preferences)
        except SinkError as exc:
            log.warning("feeds of %d users computed but not cached: %s", len(results), exc)
            return [r.uncached(exc) for r in results]
        return results

    def read(self, user_id: str, *, offset: int = 0, count: int | None = None) -> FeedResult:
        """A page of the user's feed: the cached one, else computed now (and cached when possible)."""
        try:
            cached = self.store.read_feed(user_id, offset, count)
        except SinkError as exc:
            FEED_READS.labels("error").inc()
            log.warning("feed cache unavailable, computing the feed of %s: %s", user_id, exc)
            return self.computer.compute(user_id).uncached(exc).page(offset, count)
        if cached is not None:
            FEED_READS.labels("hit").inc()
            return FeedResult(user_id, tuple(cached), "cache", from_cache=True)
        FEED_READS.labels("miss").inc()
        return self.refresh([user_id])[0].page(offset, count)
