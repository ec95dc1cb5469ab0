"""Pixie-style random walks with restart over a bipartite pin-board graph, vectorised with numpy:
many walkers advance together, with visit counts kept per query pin for multi-hit boosting."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streams.errors import ConfigError, ProcessingError

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class RankerDeadlineExceeded(ProcessingError):
    """The walks ran past the ranking deadline; the caller serves a cheaper fallback."""

    def __init__(self, message: str) -> None:
        super().__init__(message, stage="feed", reason="deadline")


@dataclass(frozen=True, slots=True)
class WalkParams:
    """Pixie's knobs: step budget N, restart probability alpha, early stop at n_p pins with n_v visits."""

    steps: int = 20_000
    restart: float = 0.5
    high_visits: int = 4
    high_pins: int = 50
    # Walkers advanced side by side per round: a speed knob (numpy call overhead per round).
    walkers: int = 1024

    def __post_init__(self) -> None:
        if self.steps < 1 or self.walkers < 1 or self.high_visits < 1 or self.high_pins < 1:
            raise ConfigError("walk steps, walkers, high_visits and high_pins must be >= 1")
        if not 0 < self.restart < 1:
            raise ConfigError(f"the restart probability must be in (0, 1), not {self.restart}")


def _csr(rows: int, heads: IntArray, tails: IntArray, weights: FloatArray
         ) -> tuple[IntArray, IntArray, FloatArray, FloatArray]:
    """Row pointers, targets, weights and sampling keys (row + cumulative share of the row's weight)."""
    # The keys rise across rows, so one searchsorted over all of them samples any row's neighbours.
    order = np.lexsort((tails, heads))
    heads, tails, weights = heads[order], tails[order], weights[order]
    ptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(heads, minlength=rows), out=ptr[1:])
    cum = np.cumsum(weights)
    starts = ptr[:-1][heads]
    before = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    totals = np.zeros(rows, dtype=np.float64)
    np.add.at(totals, heads, weights)
    keys = heads + (cum - before) / totals[heads]
    ends = ptr[1:][ptr[1:] > ptr[:-1]] - 1
    keys[ends] = heads[ends] + 1.0  # exact: no rounding error lets a sample spill into the next row
    return ptr, tails, weights, keys


class WalkGraph:
    """Pins and boards with weighted edges both ways (CSR); edges with weight <= 0 are left out."""

    def __init__(self, pin_ids: Sequence[str], board_ids: Sequence[str], pin_of_edge: IntArray,
                 board_of_edge: IntArray, weight: FloatArray, *, pin_index: dict[str, int] | None = None
                 ) -> None:
        self.pin_ids = tuple(pin_ids)
        self.board_ids = tuple(board_ids)
        self.pin_index = pin_index if pin_index is not None else {p: i for i, p in enumerate(self.pin_ids)}
        self.pin_ptr, self.pin_boards, _, self._pin_keys = _csr(len(self.pin_ids), pin_of_edge,
                                                                board_of_edge, weight)
        self.board_ptr, self.board_pins, self.board_weights, self._board_keys = _csr(
            len(self.board_ids), board_of_edge, pin_of_edge, weight)
        self.degree: IntArray = np.diff(self.pin_ptr)

    @classmethod
    def from_board_pins(cls, board_pins: Mapping[str, Mapping[str, float]],
                        extra_pins: Iterable[str] = ()) -> WalkGraph:
        """The graph of these boards' pins; `extra_pins` get an index even without an edge."""
        board_ids = sorted(board_pins)  # sorted: the same input gives the same walks
        pins: list[str] = []
        weights: list[float] = []
        sizes: list[int] = []
        for board in board_ids:
            row = board_pins[board]
            pins.extend(row)
            weights.extend(row.values())
            sizes.append(len(row))
        pin_ids = list(dict.fromkeys([*pins, *extra_pins]))
        index = {pin: i for i, pin in enumerate(pin_ids)}
        heads = np.fromiter(map(index.__getitem__, pins), dtype=np.int64, count=len(pins))
        tails = np.repeat(np.arange(len(board_ids), dtype=np.int64), sizes)
        weight = np.asarray(weights, dtype=np.float64)
        positive = weight > 0
        return cls(pin_ids, board_ids, heads[positive], tails[positive], weight[positive], pin_index=index)

    def boards_of(self, pin: int) -> IntArray:
        return self.pin_boards[self.pin_ptr[pin]:self.pin_ptr[pin + 1]]

    def best_boards(self, board_visits: IntArray) -> IntArray:
        """Per pin, its most visited board (-1 for a pin on no board): what a walk reason names."""
        edge_pin = np.repeat(np.arange(len(self.pin_ids)), self.degree)
        order = np.lexsort((-board_visits[self.pin_boards], edge_pin))
        best = np.full(len(self.pin_ids), -1, dtype=np.int64)
        on_boards = self.degree > 0
        best[on_boards] = self.pin_boards[order[self.pin_ptr[:-1][on_boards]]]
        return best

    def step(self, pins: IntArray, rng: np.random.Generator) -> tuple[IntArray, IntArray]:
        """One pin -> board -> pin move of every walker, each edge taken in proportion to its weight."""
        boards = self.pin_boards[np.searchsorted(self._pin_keys, pins + rng.random(pins.size),
                                                 side="right")]
        nxt = self.board_pins[np.searchsorted(self._board_keys, boards + rng.random(boards.size),
                                              side="right")]
        return boards, nxt


@dataclass(frozen=True, slots=True)
class WalkResult:
    """Per pin of the graph: boosted score (sum over query pins of sqrt(visits))^2 and raw visits."""

    boosted: FloatArray
    visits: IntArray
    board_visits: IntArray
    steps: int
    rounds: int
    stopped_early: int  # query pins whose walks ended by the n_p/n_v rule, not by their budget

    @classmethod
    def empty(cls, graph: WalkGraph) -> WalkResult:
        pins, boards = len(graph.pin_ids), len(graph.board_ids)
        return cls(np.zeros(pins), np.zeros(pins, dtype=np.int64), np.zeros(boards, dtype=np.int64),
                   0, 0, 0)


def query_budgets(graph: WalkGraph, query: IntArray, weights: FloatArray, steps: int) -> FloatArray:
    """Steps per query pin: Pixie's weight * degree * (C - log degree), which favours neither
    hubs (their walks spread thin) nor leaves (they reach little) too much."""
    degree = graph.degree[query].astype(np.float64)
    c = math.log(max(float(graph.degree.max(initial=1)), 1.0)) + 1.0
    scale = weights * degree * (c - np.log(degree))
    return steps * scale / scale.sum()


def random_walks(graph: WalkGraph, query_pins: Sequence[int], query_weights: Sequence[float],
                 params: WalkParams, rng: np.random.Generator, *, deadline: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> WalkResult:
    """Walks with restart from each weighted query pin; raises RankerDeadlineExceeded once
    `clock()` passes `deadline` (checked between rounds)."""
    query = np.asarray(query_pins, dtype=np.int64)
    weights = np.asarray(query_weights, dtype=np.float64)
    keep = (weights > 0) & (graph.degree[query] > 0) if query.size else np.zeros(0, dtype=bool)
    query, weights = query[keep], weights[keep]
    if query.size == 0:
        return WalkResult.empty(graph)
    n_query, n_pins = query.size, len(graph.pin_ids)
    budget = query_budgets(graph, query, weights, params.steps)
    per_query = np.maximum(1, np.rint(params.walkers * budget / params.steps)).astype(np.int64)
    origin = np.repeat(np.arange(n_query), per_query)
    start = query[origin]
    current = start.copy()
    remaining = rng.geometric(params.restart, size=origin.size)
    counts = np.zeros(n_query * n_pins, dtype=np.int32)
    board_visits = np.zeros(len(graph.board_ids), dtype=np.int64)
    high = np.zeros(n_query, dtype=np.int64)
    taken = np.zeros(n_query, dtype=np.int64)
    active = np.ones(n_query, dtype=bool)
    rounds = 0
    while origin.size:
        if deadline is not None and clock() > deadline:
            raise RankerDeadlineExceeded(f"walks stopped after {rounds} rounds, {int(taken.sum())} steps")
        rounds += 1
        boards, current_next = graph.step(current, rng)
        board_visits += np.bincount(boards, minlength=board_visits.size)
        hit, hits = np.unique(origin * n_pins + current_next, return_counts=True)
        before = counts[hit]
        counts[hit] = before + hits
        crossed = hit[(before < params.high_visits) & (before + hits >= params.high_visits)]
        high += np.bincount(crossed // n_pins, minlength=n_query)
        taken += np.bincount(origin, minlength=n_query)
        remaining -= 1
        ended = remaining == 0
        current = np.where(ended, start, current_next)
        remaining[ended] = rng.geometric(params.restart, size=int(ended.sum()))
        active &= (taken < budget) & (high <= params.high_pins)
        alive = active[origin]
        if not alive.all():
            origin, start, current, remaining = origin[alive], start[alive], current[alive], remaining[alive]
    per_pin = counts.reshape(n_query, n_pins)
    boosted = np.square(np.sqrt(per_pin, dtype=np.float64).sum(axis=0))
    return WalkResult(boosted, per_pin.sum(axis=0, dtype=np.int64), board_visits, int(taken.sum()),
                      rounds, int((high > params.high_pins).sum()))


def walk_seed(seed: int, user_id: str) -> np.random.Generator:
    """A generator for one user's walks: the same seed and user give the same walks in any process."""
    # Not hash(): Python salts str hashes per process.
    digest = hashlib.blake2b(user_id.encode(), digest_size=8).digest()
    return np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, int.from_bytes(digest, "big")])
