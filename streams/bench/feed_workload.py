"""The feed benches' data: the planted-interest workload split in time, the weighted graph built
from it in memory (the graph stage's edge model), synthetic pin embeddings and popularity."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import combinations

import numpy as np

from processors.feed import Neighbours
from processors.ranking import EmbeddingTable
from streams.events import NodeType
from streams.settings import Settings
from streams.workload.pins import pin_record
from streams.workload.population import World
from streams.workload.records import InteractionRecord

POSITIVE = frozenset({"click", "closeup", "save"})
START = datetime(2026, 11, 1, tzinfo=UTC)


class MemoryGraph:
    """The weighted graph as nested dicts, read through the feed's GraphReader protocol."""

    def __init__(self) -> None:
        self.rows: dict[NodeType, dict[str, dict[NodeType, dict[str, float]]]] = {
            t: defaultdict(lambda: defaultdict(dict)) for t in (NodeType.USER, NodeType.PIN, NodeType.BOARD)}

    def add(self, a_type: NodeType, a: str, b_type: NodeType, b: str, weight: float) -> None:
        for src_type, src, dst_type, dst in ((a_type, a, b_type, b), (b_type, b, a_type, a)):
            row = self.rows[src_type][src][dst_type]
            row[dst] = row.get(dst, 0.0) + weight

    def neighbours(self, node_type: NodeType, node_ids: Sequence[str]) -> dict[str, Neighbours]:
        table = self.rows[node_type]
        return {node: table[node] for node in node_ids if node in table}


@dataclass(frozen=True, slots=True)
class GraphWeights:
    """The graph stage's edge model (see the module docstring), from the `graph_*` settings."""

    actions: Mapping[str, float]
    board: float
    coengagement: float
    half_life_ms: float
    session_max_pins: int

    @classmethod
    def from_settings(cls, settings: Settings, *, impression: float | None = None) -> GraphWeights:
        return cls({"impression": settings.graph_weight_impression if impression is None else impression,
                    "click": settings.graph_weight_click, "closeup": settings.graph_weight_closeup,
                    "save": settings.graph_weight_save, "hide": settings.graph_weight_hide},
                   settings.graph_weight_board, settings.graph_weight_coengagement,
                   settings.graph_half_life_s * 1000, settings.graph_session_max_pins)


# The graph stage's edge model, so that the streaming processor builds this same graph from the
# same events; every contribution is decayed by 2^(-age / half-life) to `now_ms`:
# - user-pin: the action's weight per event (impression 0 = no edge by default, hide negative);
# - pin-board: the board weight per pin creation and per save to a board;
# - pin-pin: the co-engagement weight per session that engaged both (click, close-up or save),
#   among the session's first N engaged pins, at the later of their two first engagements.
def build_graph(world: World, events: Sequence[InteractionRecord], now_ms: int,
                weights: GraphWeights) -> MemoryGraph:
    """The graph of the pins' boards and of `events`, weights decayed to `now_ms`."""
    graph = MemoryGraph()

    def decay(at_ms: int) -> float:
        return 2.0 ** (-(now_ms - at_ms) / weights.half_life_ms)

    for pin in world.pins:  # created over the 30 days before the interactions start
        created = pin_record(world, pin, start=START, with_image=False).event_time_ms
        graph.add(NodeType.PIN, pin.pin_id, NodeType.BOARD, pin.board_id, weights.board * decay(created))
    sessions: dict[str, dict[str, int]] = defaultdict(dict)
    for e in events:
        weight = weights.actions[e.action]
        if weight:
            graph.add(NodeType.USER, e.user_id, NodeType.PIN, e.pin_id, weight * decay(e.event_time_ms))
        if e.action == "save" and e.board_id:
            graph.add(NodeType.PIN, e.pin_id, NodeType.BOARD, e.board_id,
                      weights.board * decay(e.event_time_ms))
        if e.action in POSITIVE:
            engaged = sessions[f"{e.user_id}:{e.session_id}"]
            engaged[e.pin_id] = min(engaged.get(e.pin_id, e.event_time_ms), e.event_time_ms)
    for engaged in sessions.values():
        first = sorted(engaged.items(), key=lambda item: (item[1], item[0]))[:weights.session_max_pins]
        for (a, ta), (b, tb) in combinations(first, 2):
            graph.add(NodeType.PIN, a, NodeType.PIN, b, weights.coengagement * decay(max(ta, tb)))
    return graph


@dataclass(frozen=True, slots=True)
class Split:
    train: list[InteractionRecord]
    targets: dict[str, frozenset[str]]  # user -> held-out pins new to the user
    end_ms: int


def split_last_positives(events: Sequence[InteractionRecord], held_out: int) -> Split:
    """Per user: events before the last `held_out` positively engaged pins train; targets are those
    pins, less any the user engaged with positively in training."""
    by_user: dict[str, list[InteractionRecord]] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    train: list[InteractionRecord] = []
    targets: dict[str, frozenset[str]] = {}
    for user, mine in by_user.items():
        cut = None
        seen: set[str] = set()
        for e in reversed(mine):
            if e.action in POSITIVE:
                seen.add(e.pin_id)
                if len(seen) == held_out:
                    cut = e.event_time_ms
                    break
        if cut is None:
            train.extend(mine)
            continue
        before = [e for e in mine if e.event_time_ms < cut]
        known = {e.pin_id for e in before if e.action in POSITIVE}
        new = frozenset(e.pin_id for e in mine if e.event_time_ms >= cut and e.action in POSITIVE) - known
        train.extend(before)
        if new:
            targets[user] = new
    train.sort(key=lambda e: e.event_time_ms)
    return Split(train, targets, max(e.event_time_ms for e in train))


def synthetic_embeddings(world: World, dim: int, seed: int) -> EmbeddingTable:
    """A unit centroid per cluster plus noise of the same norm: cosine ~0.5 within a cluster, ~0 across
    (no images are rendered, so no CNN features)."""
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((len(world.clusters), dim))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    noise = rng.standard_normal((len(world.pins), dim))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    clusters = np.fromiter((p.cluster_id for p in world.pins), dtype=np.int64, count=len(world.pins))
    return EmbeddingTable([p.pin_id for p in world.pins], centroids[clusters] + noise)


class Popularity:
    """Pins by total positive engagement in training: the baseline, and the trending filler."""

    def __init__(self, events: Sequence[InteractionRecord], weights: GraphWeights) -> None:
        counts: dict[str, float] = defaultdict(float)
        for e in events:
            if e.action in POSITIVE:
                counts[e.pin_id] += weights.actions[e.action]
        self.ranked = sorted(counts.items(), key=lambda x: (-x[1], x[0]))

    def trending(self, limit: int) -> list[tuple[str, float]]:
        return self.ranked[:limit]
