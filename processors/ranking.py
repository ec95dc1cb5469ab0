"""Feed ranking: a user's 2-hop candidates, PinSage-style pooled similarity to the user's taste, the
combined score with a reason per pin, and co-engagement scores for the deadline fallback."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from processors.walks import FloatArray, IntArray, WalkGraph, WalkResult
from streams.errors import ConfigError
from streams.events import FeedItem

Weighted = Mapping[str, float]
Vector = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

# How a query pin's 2-hop mass splits between its boards and its co-engaged pins (when it has both).
BOARD_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class RankParams:
    """Combination of the signals: score = (1 - beta) * walk + beta * pooled similarity + cf tie-break."""

    size: int = 200
    embedding_weight: float = 0.1  # beta
    neighbour_weight: float = 1.0  # lambda: pooled neighbours against the pin's own embedding
    cf_weight: float = 0.05  # orders candidates that the walks did not reach
    max_candidates: int = 10_000
    max_query_pins: int = 100
    max_boards: int = 1000  # boards read around the query pins, the heaviest first
    # Pins the user engaged with at least this much (about a recent click) are not shown again;
    # pins only scrolled past (impressions) may be.
    min_engaged_weight: float = 0.5

    def __post_init__(self) -> None:
        if min(self.size, self.max_candidates, self.max_query_pins, self.max_boards) < 1:
            raise ConfigError("feed size, max_candidates, max_query_pins and max_boards must be >= 1")
        if not 0 <= self.embedding_weight <= 1 or self.neighbour_weight < 0 or self.cf_weight < 0:
            raise ConfigError("embedding_weight must be in [0, 1]; neighbour and cf weights >= 0")


@dataclass(frozen=True, slots=True)
class UserPins:
    """A user's pin edges by weight: where walks start (the heaviest positive ones, impressions
    included), what is not shown again (engaged at least `min_engaged_weight`), what was hidden."""

    query: dict[str, float]  # heaviest positive pins, heaviest first
    engaged: frozenset[str]
    hidden: frozenset[str]

    @classmethod
    def of(cls, user_pins: Weighted, limit: int, min_engaged_weight: float) -> UserPins:
        positive = sorted(((w, p) for p, w in user_pins.items() if w > 0), key=lambda x: (-x[0], x[1]))
        return cls(query={p: w for w, p in positive[:limit]},
                   engaged=frozenset(p for w, p in positive if w >= min_engaged_weight),
                   hidden=frozenset(p for p, w in user_pins.items() if w < 0))


def cf_scores(graph: WalkGraph, query: Weighted, pin_boards: Mapping[str, Weighted],
              co_engaged: Mapping[str, Weighted]) -> FloatArray:
    """Collaborative-filtering score of every pin of the graph: the probability that one step from
    a query pin (chosen by weight), through one of its boards or co-engagement edges, lands there."""
    board_index = {board: i for i, board in enumerate(graph.board_ids)}
    board_mass = np.zeros(len(graph.board_ids))
    scores = np.zeros(len(graph.pin_ids))
    total_query = sum(query.values()) or 1.0
    co_rows = [co_engaged.get(q, {}) for q in query]
    co_totals = [sum(row.values()) for row in co_rows]  # co-engagement weights are never negative
    co_mass: list[float] = []
    for (q, weight), co_total in zip(query.items(), co_totals, strict=True):
        mass = weight / total_query
        boards = {board_index[b]: w for b, w in pin_boards.get(q, {}).items() if w > 0 and b in board_index}
        via_boards = (mass * (BOARD_SHARE if co_total > 0 else 1.0)) if boards else 0.0
        board_total = sum(boards.values())
        for b, w in boards.items():
            board_mass[b] += via_boards * w / board_total
        co_mass.append((mass - via_boards) / co_total if co_total > 0 else 0.0)
    # Co-engagement rows of popular pins are long: flattened and indexed in C, not row by row.
    lengths = np.fromiter(map(len, co_rows), dtype=np.int64, count=len(co_rows))
    entries = int(lengths.sum())
    if entries:
        rows = np.fromiter(map(graph.pin_index.get, chain.from_iterable(co_rows), repeat(-1)),
                           dtype=np.int64, count=entries)
        weights = np.fromiter(chain.from_iterable(row.values() for row in co_rows), dtype=np.float64,
                              count=entries)
        share = np.repeat(np.asarray(co_mass), lengths) * np.maximum(weights, 0.0)
        known = rows >= 0
        scores += np.bincount(rows[known], weights=share[known], minlength=len(graph.pin_ids))
    # Each board hands its mass on to its pins in proportion to the edge weights.
    edge_board = np.repeat(np.arange(len(graph.board_ids)), np.diff(graph.board_ptr))
    board_total_weight = np.bincount(edge_board, weights=graph.board_weights, minlength=len(graph.board_ids))
    share = board_mass[edge_board] * graph.board_weights / board_total_weight[edge_board]
    scores += np.bincount(graph.board_pins, weights=share, minlength=len(graph.pin_ids))
    return scores


def candidate_mask(cf: FloatArray, excluded: BoolArray, limit: int, *, also: BoolArray | None = None
                   ) -> BoolArray:
    """Pins with a co-engagement score, best `limit` of them, plus `also` (ANN hits), not excluded."""
    mask = (cf > 0) & ~excluded
    chosen = np.flatnonzero(mask)
    if chosen.size > limit:
        # Ties broken by position, so that the cap is deterministic.
        keep = chosen[np.lexsort((chosen, -cf[chosen]))[:limit]]
        mask = np.zeros_like(mask)
        mask[keep] = True
    if also is not None:
        mask |= also & ~excluded
    return mask


@dataclass(frozen=True, slots=True)
class Neighbourhood:
    """What the graph holds around one user: engaged pins, their boards and co-engaged pins, and
    those boards' pins."""

    pins: UserPins
    pin_boards: Mapping[str, Mapping[str, float]]
    co_engaged: Mapping[str, Mapping[str, float]]
    board_pins: Mapping[str, Mapping[str, float]]


@dataclass(frozen=True, slots=True)
class Candidates:
    """The walk graph of a neighbourhood, co-engagement scores over its pins, and who may be shown."""

    graph: WalkGraph
    cf: FloatArray
    eligible: BoolArray

    @classmethod
    def of(cls, hood: Neighbourhood, exclude: Collection[str], similar: Collection[str],
           limit: int) -> Candidates:
        query = hood.pins.query
        co_pins = chain.from_iterable(hood.co_engaged.values())
        graph = WalkGraph.from_board_pins(hood.board_pins, extra_pins=chain(query, co_pins, similar))
        candidates = cls._scored(graph, hood, exclude, similar, limit)
        if len(graph.pin_ids) > 2 * limit + len(query) + len(similar):
            # A huge neighbourhood: walk only where candidates are, so walk memory stays bounded.
            keep = {graph.pin_ids[i] for i in np.flatnonzero(candidates.eligible)} | query.keys()
            pruned = {b: {p: w for p, w in row.items() if p in keep} for b, row in hood.board_pins.items()}
            graph = WalkGraph.from_board_pins(pruned, extra_pins=[*query, *keep])
            candidates = cls._scored(graph, hood, exclude, similar, limit)
        return candidates

    @classmethod
    def _scored(cls, graph: WalkGraph, hood: Neighbourhood, exclude: Collection[str],
                similar: Collection[str], limit: int) -> Candidates:
        cf = cf_scores(graph, hood.pins.query, hood.pin_boards, hood.co_engaged)
        count = len(graph.pin_ids)
        excluded = np.fromiter(map(exclude.__contains__, graph.pin_ids), dtype=bool, count=count)
        also = (np.fromiter(map(similar.__contains__, graph.pin_ids), dtype=bool, count=count)
                if similar else None)
        return cls(graph, cf, candidate_mask(cf, excluded, limit, also=also))


def taste_vector(query: Weighted, vectors: Mapping[str, Vector]) -> Vector | None:
    """The user's taste: the weight-averaged embedding of the engaged pins (edge weights already
    decay with time in the graph), unit length; None when none of them has an embedding."""
    found = [(w, vectors[p]) for p, w in query.items() if p in vectors and w > 0]
    if not found:
        return None
    taste = np.sum([w * np.asarray(v, dtype=np.float32) for w, v in found], axis=0)
    norm = float(np.linalg.norm(taste))
    return (taste / norm).astype(np.float32) if norm > 0 else None


def pooled_similarity(graph: WalkGraph, sims: FloatArray, found: BoolArray, visits: FloatArray,
                      neighbour_weight: float) -> tuple[FloatArray, BoolArray]:
    """PinSage-style: each pin's cosine to the taste vector mixed with its board neighbours', these
    weighted by importance (walk visits); also says which pins have a score."""
    # Pooling cosines equals projecting the pooled (unnormalised) embedding on the taste vector:
    # the same score without materialising ~10k neighbour vectors of 1280 floats.
    own = np.where(found, sims, 0.0)
    importance = np.where(found, visits, 0.0)
    edge_board = np.repeat(np.arange(len(graph.board_ids)), np.diff(graph.board_ptr))
    edge_pin = graph.board_pins
    board_num = np.bincount(edge_board, weights=importance[edge_pin] * own[edge_pin],
                            minlength=len(graph.board_ids))
    board_den = np.bincount(edge_board, weights=importance[edge_pin], minlength=len(graph.board_ids))
    # Sum over each pin's boards, minus the pin itself (its own cosine enters as `own`).
    pins = len(graph.pin_ids)
    num = np.bincount(edge_pin, weights=board_num[edge_board], minlength=pins)
    den = np.bincount(edge_pin, weights=board_den[edge_board], minlength=pins)
    num -= graph.degree * importance * own
    den -= graph.degree * importance
    has_neighbours = den > 1e-9
    neighbour = np.divide(num, den, out=np.zeros(pins), where=has_neighbours)
    both = found & has_neighbours
    score = np.where(both, (own + neighbour_weight * neighbour) / (1.0 + neighbour_weight),
                     np.where(found, own, neighbour))
    return score, found | has_neighbours


def normalised_walk_score(boosted: FloatArray) -> FloatArray:
    """Boosted visit counts on a log scale in [0, 1]: heavy-tailed counts would swamp the rest."""
    top = float(boosted.max(initial=0.0))
    return np.log1p(boosted) / np.log1p(top) if top > 0 else np.zeros_like(boosted)


@dataclass(frozen=True, slots=True)
class Scored:
    """Scores over `pin_ids` (graph pins first, then pins outside the walk graph)."""

    pin_ids: Sequence[str]
    score: FloatArray
    walk: FloatArray  # weighted share of the walk term
    similarity: FloatArray  # weighted share of the embedding term


def combine(graph: WalkGraph, walks: WalkResult, cf: FloatArray, params: RankParams, *,
            sims: FloatArray | None = None, found: BoolArray | None = None) -> Scored:
    """The combined score of every pin of the graph (walk, pooled similarity, cf tie-break)."""
    beta = params.embedding_weight if sims is not None else 0.0
    walk = (1.0 - beta) * normalised_walk_score(walks.boosted)
    similarity = np.zeros(len(graph.pin_ids))
    if sims is not None and found is not None:
        pooled, has_score = pooled_similarity(graph, sims, found, walks.visits.astype(np.float64),
                                              params.neighbour_weight)
        similarity = beta * np.where(has_score, pooled, 0.0)
    cf_top = float(cf.max(initial=0.0))
    tie_break = params.cf_weight * (cf / cf_top if cf_top > 0 else cf)
    return Scored(graph.pin_ids, walk + similarity + tie_break, walk, similarity)


def best(scores: FloatArray, eligible: BoolArray, size: int) -> IntArray:
    """Indices of the `size` best eligible scores, best first, ties by index."""
    chosen = np.flatnonzero(eligible)
    if chosen.size > size:
        chosen = chosen[np.argpartition(-scores[chosen], size - 1)[:size]]
    return chosen[np.lexsort((chosen, -scores[chosen]))]


def top_items(scored: Scored, eligible: BoolArray, size: int, *, graph: WalkGraph, walks: WalkResult,
              similar: Collection[str] = ()) -> list[FeedItem]:
    """The `size` best eligible pins, best first, each with why it is there."""
    boards = graph.best_boards(walks.board_visits)
    items = []
    for i in best(scored.score, eligible, size):
        pin = scored.pin_ids[i]
        walk, similarity = scored.walk[i], scored.similarity[i]
        if walk > 0 and walk >= similarity and boards[i] >= 0:
            reason = f"walk:board {graph.board_ids[boards[i]]}"
        elif similarity > 0 or pin in similar:
            reason = "similar"
        else:
            reason = "cf"
        items.append(FeedItem(pin, round(float(scored.score[i]), 6), reason))
    return items


def cf_items(graph: WalkGraph, cf: FloatArray, eligible: BoolArray, size: int) -> list[FeedItem]:
    """The deadline fallback: the best co-engagement scores, no walks, no embeddings."""
    chosen = best(cf, eligible & (cf > 0), size)
    top = float(cf[chosen[0]]) if chosen.size else 1.0
    return [FeedItem(graph.pin_ids[i], round(float(cf[i]) / top, 6), "cf") for i in chosen]


class EmbeddingTable:
    """Unit embeddings held in one float32 matrix (a cache of the pins' vectors, or a test fake)."""

    def __init__(self, pin_ids: Sequence[str], matrix: Any) -> None:
        rows = np.asarray(matrix, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[0] != len(pin_ids):
            raise ValueError(f"{len(pin_ids)} pin ids for a matrix of shape {rows.shape}")
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        self.matrix = rows / np.where(norms > 0, norms, 1.0)
        self.row = {pin: i for i, pin in enumerate(pin_ids)}

    def vectors(self, pin_ids: Sequence[str]) -> dict[str, Vector]:
        return {p: self.matrix[self.row[p]] for p in pin_ids if p in self.row}

    def cosine(self, pin_ids: Sequence[str], query: Vector) -> tuple[FloatArray, BoolArray]:
        rows = np.fromiter(map(self.row.get, pin_ids, repeat(-1)), dtype=np.int64, count=len(pin_ids))
        found = rows >= 0
        sims = np.zeros(len(pin_ids))
        if found.any():
            wanted = rows[found]
            # einsum, not BLAS: a threaded BLAS call on busy cores costs several times more here.
            if wanted.size * 4 > self.matrix.shape[0]:
                # Most rows wanted: one pass over the whole matrix beats gathering rows first.
                sims[found] = np.einsum("ij,j->i", self.matrix, query)[wanted]
            else:
                sims[found] = np.einsum("ij,j->i", self.matrix[wanted], query)
        return sims, found
