"""The graph stage: interactions and pin creations -> time-decayed weighted edges (user->pin,
pin<->board, pin<->pin co-engagement) in HBase rows, and GraphEdgeDelta records for graph.edges.v1.

Weights decay with event time, never the wall clock, so the graph depends only on the set of
events: any order, any batching, any redelivery gives the graph `batch_recompute` gives.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from processors.graph_deltas import Announcement, delta_of
from processors.graph_state import (
    GRAPH_EVENTS,
    GRAPH_ROWS_READ,
    GRAPH_STALE,
    GraphRowStore,
    Position,
    RowCache,
    RowState,
    SeenIds,
    admit,
    position_of,
    session_pairs,
)
from processors.graph_writer import WriterLease
from sinks.hbase import millis
from sinks.hbase_graph import NODE_PREFIXES, SESSION_PREFIX, Edge, RowWrite, StoredRow
from streams.events import (
    ConsumedRecord,
    EdgeType,
    GraphEdgeDelta,
    InteractionAction,
    NodeType,
    PinCreated,
    PinInteraction,
)
from streams.settings import Settings

GraphEvent = PinInteraction | PinCreated
Graph = dict[str, dict[str, Edge]]  # row node key -> neighbour node key -> edge

# Actions that count as engaging a pin for co-engagement: not impressions (seen, not chosen) and
# not hides.
COENGAGING = frozenset({InteractionAction.CLICK, InteractionAction.CLOSEUP, InteractionAction.SAVE})
_PIN = NODE_PREFIXES[NodeType.PIN] + ":"
_SESSION_MEMBER = 1.0  # the weight slot of a session row's cells; only their time matters


@dataclass(frozen=True, slots=True)
class GraphConfig:
    """Edge weights, decay and memory bounds of the graph stage."""

    action_weights: Mapping[InteractionAction, float]
    board_weight: float = 1.0
    coengagement_weight: float = 1.0
    half_life_ms: float = 7 * 86_400_000.0
    session_max_pins: int = 20
    cache_max_cells: int = 500_000
    dedup_ids_per_partition: int = 100_000

    @classmethod
    def from_settings(cls, settings: Settings) -> GraphConfig:
        return cls(
            action_weights={
                InteractionAction.IMPRESSION: settings.graph_weight_impression,
                InteractionAction.CLICK: settings.graph_weight_click,
                InteractionAction.CLOSEUP: settings.graph_weight_closeup,
                InteractionAction.SAVE: settings.graph_weight_save,
                InteractionAction.HIDE: settings.graph_weight_hide,
            },
            board_weight=settings.graph_weight_board,
            coengagement_weight=settings.graph_weight_coengagement,
            half_life_ms=settings.graph_half_life_s * 1000.0,
            session_max_pins=settings.graph_session_max_pins,
            cache_max_cells=settings.graph_cache_max_cells,
            dedup_ids_per_partition=settings.graph_dedup_ids_per_partition,
        )


class Contribution(NamedTuple):
    """`weight` added at `at_ms` to the edge src -> dst: in the row of src, the column of dst.
    `announce`: this direction carries the delta (an undirected edge announces one of its two)."""

    row: str
    column: str
    src_type: NodeType
    src: str
    dst_type: NodeType
    dst: str
    edge_type: EdgeType
    weight: float
    at_ms: int
    announce: bool = True


def contribution(src_type: NodeType, src: str, dst_type: NodeType, dst: str, edge_type: EdgeType,
                 weight: float, at_ms: int, announce: bool = True) -> Contribution:
    return Contribution(f"{NODE_PREFIXES[src_type]}:{src}", f"{NODE_PREFIXES[dst_type]}:{dst}",
                        src_type, src, dst_type, dst, edge_type, weight, at_ms, announce)


# --- the edge model: plain functions ------------------------------------------------------------

def direct_contributions(event: GraphEvent, at_ms: int, config: GraphConfig) -> list[Contribution]:
    """What one event (at `at_ms`) adds by itself: user->pin per action, pin<->board per save or
    creation."""
    out: list[Contribution] = []
    if isinstance(event, PinInteraction):
        weight = config.action_weights.get(event.action, 0.0)
        if weight:
            out.append(contribution(NodeType.USER, event.user_id, NodeType.PIN, event.pin_id,
                                    EdgeType.USER_PIN, weight, at_ms))
        if event.action is InteractionAction.SAVE and event.board_id:
            out.extend(board_contributions(event.pin_id, event.board_id, config.board_weight, at_ms))
    elif event.board_id:
        out.extend(board_contributions(event.pin_id, event.board_id, config.board_weight, at_ms))
    return out


def board_contributions(pin_id: str, board_id: str, weight: float, at_ms: int) -> list[Contribution]:
    if not weight:
        return []
    return [contribution(NodeType.PIN, pin_id, NodeType.BOARD, board_id, EdgeType.PIN_BOARD, weight, at_ms),
            contribution(NodeType.BOARD, board_id, NodeType.PIN, pin_id, EdgeType.PIN_BOARD, weight, at_ms,
                         announce=False)]


def pair_contributions(pin_a: str, pin_b: str, weight: float, at_ms: int) -> list[Contribution]:
    """Both directions of a co-engagement between two pin keys; the smaller key announces it."""
    if pin_b < pin_a:
        pin_a, pin_b = pin_b, pin_a
    a, b = pin_a[len(_PIN):], pin_b[len(_PIN):]
    return [Contribution(pin_a, pin_b, NodeType.PIN, a, NodeType.PIN, b, EdgeType.PIN_PIN, weight, at_ms),
            Contribution(pin_b, pin_a, NodeType.PIN, b, NodeType.PIN, a, EdgeType.PIN_PIN, weight, at_ms,
                         False)]


def session_key(event: GraphEvent) -> str | None:
    """The session row an interaction co-engages in, or None (not engaging, or no session)."""
    if isinstance(event, PinInteraction) and event.action in COENGAGING and event.session_id:
        return f"{SESSION_PREFIX}:{event.user_id}:{event.session_id}"
    return None


def graph_inputs(records: Iterable[ConsumedRecord]) -> tuple[list[GraphEvent], list[Position]]:
    """The graph's events among consumed records, with their original positions."""
    events: list[GraphEvent] = []
    positions: list[Position] = []
    for record in records:
        if isinstance(record.value, PinInteraction | PinCreated):
            events.append(record.value)
            positions.append(position_of(record))
    return events, positions


# --- batch recomputation: the invariant the incremental path must meet -------------------------

def batch_recompute(events: Iterable[GraphEvent], config: GraphConfig) -> Graph:
    """The graph of a set of events computed from scratch (each event id once, any order)."""
    seen: set[uuid.UUID] = set()
    contributions: list[Contribution] = []
    sessions: dict[str, dict[str, int]] = {}
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        at_ms = millis(event.event_time)
        contributions.extend(direct_contributions(event, at_ms, config))
        key = session_key(event)
        if key is not None:
            members = sessions.setdefault(key, {})
            pin = _PIN + event.pin_id
            members[pin] = min(at_ms, members.get(pin, at_ms))
    for members in sessions.values():
        for (a, b), at_ms in session_pairs(members, config.session_max_pins).items():
            contributions.extend(pair_contributions(a, b, config.coengagement_weight, at_ms))
    graph: Graph = {}
    for c in contributions:
        row = graph.setdefault(c.row, {})
        edge = row.get(c.column)
        row[c.column] = Edge(c.weight, c.at_ms) if edge is None else edge.plus(c.weight, c.at_ms,
                                                                               config.half_life_ms)
    return graph


def graph_of(rows: Mapping[str, StoredRow]) -> Graph:
    """The graph held by stored rows (the processor's session rows left out)."""
    return {key: dict(row.edges) for key, row in rows.items()
            if not key.startswith(SESSION_PREFIX + ":") and row.edges}


def graph_differences(expected: Graph, actual: Graph, half_life_ms: float,
                      tolerance: float = 1e-9) -> list[str]:
    """Edges whose weights differ by more than `tolerance` (relative, at least absolute) when
    compared at the same moment; an absent edge counts as weight 0."""
    differences = []
    for row in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(row, {}), actual.get(row, {})
        for column in sorted(want.keys() | got.keys()):
            a, b = want.get(column), got.get(column)
            moment = max(edge.updated_ms for edge in (a, b) if edge is not None)
            x = a.at(moment, half_life_ms) if a else 0.0
            y = b.at(moment, half_life_ms) if b else 0.0
            if abs(x - y) > tolerance * max(1.0, abs(x), abs(y)):
                differences.append(f"{row} -> {column}: expected {x:.12g}, got {y:.12g} at {moment}")
    return differences


# --- the incremental processor -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GraphBatch:
    """What one `apply` did: the deltas to publish, and event counts.

    One delta per edge contribution; an undirected edge (pin-board, pin-pin) is announced once,
    keyed by its pin (the smaller pin key of a pair). Contributions a row already had (a
    redelivery) are announced again under the same delta ids: consumers deduplicate by id.
    """

    announcements: list[Announcement]  # the deltas, compact: `DeltaEncoder` encodes them
    applied: int  # events new to the processor
    duplicates: int  # events dropped as already seen (same event id)
    stale: int  # edge contributions skipped: their row already included the event (redelivery)

    @property
    def deltas(self) -> list[GraphEdgeDelta]:
        """The announcements as contract events."""
        return [delta_of(a) for a in self.announcements]


class GraphProcessor:
    """Applies batches of events to graph rows cached from the store, and writes them back.

    `apply` computes (reading missing rows, never writing); `flush` writes every changed row and
    must succeed before the batch's offsets are committed. Exactly one processor may write a
    given row: with a `lease`, every flush first checks that no newer writer has started.
    """

    def __init__(self, store: GraphRowStore, config: GraphConfig, *, lease: WriterLease | None = None
                 ) -> None:
        self.store = store
        self.config = config
        self.lease = lease
        self.seen = SeenIds(config.dedup_ids_per_partition)
        self.cache = RowCache(config.cache_max_cells, config.half_life_ms)
        # Told of every row write HBase acknowledged (the live patch process keeps rows current).
        self.on_written: Callable[[list[RowWrite]], None] | None = None

    def apply(self, events: Sequence[GraphEvent],
              positions: Sequence[Position] | None = None) -> GraphBatch:
        """Apply a batch; `positions` (one per event, from `position_of`) make redeliveries exact
        across restarts. Reads missing rows; raises SinkError before changing anything if it cannot."""
        if positions is not None and len(positions) != len(events):
            raise ValueError("one position per event")
        fresh: list[tuple[GraphEvent, int, Position | None, list[Contribution], str | None]] = []
        batch_ids: set[int] = set()
        duplicates = 0
        for index, event in enumerate(events):
            position = positions[index] if positions is not None else None
            event_id = event.event_id.int
            if event_id in batch_ids or event_id in self.seen:
                duplicates += 1
                continue
            batch_ids.add(event_id)
            at_ms = millis(event.event_time)
            fresh.append((event, at_ms, position, direct_contributions(event, at_ms, self.config),
                          session_key(event)))
        # Every read happens before any change, so a failed read leaves the state as it was.
        sessions = [key for _, _, _, _, key in fresh if key is not None]
        self._read_through(sessions)
        wanted = [c.row for _, _, _, contributions, _ in fresh for c in contributions]
        wanted += [_PIN + event.pin_id for event, _, _, _, key in fresh if key is not None]
        for session in sessions:
            wanted.extend(self.cache.get(session).edges)
        self._read_through(wanted)

        announced: list[Announcement] = []
        stale = 0
        for event, at_ms, position, contributions, key in fresh:
            if key is not None:
                contributions = contributions + self._coengage(key, event.pin_id, at_ms, position)
            if contributions:
                stale += self._apply_event(event, position, contributions, announced)
            self.seen.add(position.stream if position else "", event.event_id.int)
        GRAPH_EVENTS.labels("applied").inc(len(fresh))
        GRAPH_EVENTS.labels("duplicate").inc(duplicates)
        GRAPH_STALE.inc(stale)
        return GraphBatch(announced, len(fresh), duplicates, stale)

    def pending_writes(self) -> list[RowWrite]:
        """The row mutations that `flush` would write: graph rows first, then session rows."""
        graph, sessions = self.cache.pending_writes()
        return graph + sessions

    def flush(self) -> int:
        """Write every changed row (graph rows, then session rows); returns rows written. On a
        SinkError the rows stay pending and the next flush writes them again."""
        written = 0
        pending = self.cache.pending_writes()
        if self.lease is not None and any(pending):
            self.lease.check()
        for writes in pending:  # sessions only once the graph rows are in
            if writes:
                self.store.write_batch(writes)
                self.cache.written(writes)
                if self.on_written is not None:
                    self.on_written(writes)
                written += len(writes)
        self.cache.trim()
        return written

    def process(self, events: Sequence[GraphEvent],
                positions: Sequence[Position] | None = None) -> GraphBatch:
        """`apply` then `flush`."""
        batch = self.apply(events, positions)
        self.flush()
        return batch

    def forget_partition(self, stream: str) -> None:
        """Drop the event ids of a revoked partition (its rows stay cached: still valid)."""
        self.seen.forget(stream)

    # --- internals ----------------------------------------------------------------------------

    def _read_through(self, keys: Iterable[str]) -> None:
        missing = self.cache.missing(keys)
        if missing:
            self.cache.load(missing, self.store.read_rows(missing))
            GRAPH_ROWS_READ.inc(len(missing))

    def _claim(self, key: str, position: Position | None) -> RowState | None:
        """The row, unless it already includes the event at `position` (then None)."""
        state = self.cache.get(key)
        if position is not None:
            if position.offset <= state.applied.get(position.stream, -1):
                return None
            self.cache.mark_applied(key, state, position.stream, position.offset)
        return state

    def _coengage(self, key: str, pin_id: str, at_ms: int, position: Position | None) -> list[Contribution]:
        state = self._claim(key, position)
        if state is None:
            return []
        members = {pin: edge.updated_ms for pin, edge in state.edges.items()}
        change = admit(members, _PIN + pin_id, at_ms, self.config.session_max_pins)
        if change is None:
            return []
        for pin in members.keys() - change.members.keys():
            self.cache.delete(key, state, pin)
        for pin, first_ms in change.members.items():
            if members.get(pin) != first_ms:
                self.cache.put(key, state, pin, Edge(_SESSION_MEMBER, first_ms))
        weight = self.config.coengagement_weight
        out: list[Contribution] = []
        for a, b, at_ms in change.retracted:
            out.extend(pair_contributions(a, b, -weight, at_ms))
        for a, b, at_ms in change.added:
            out.extend(pair_contributions(a, b, weight, at_ms))
        return out

    def _apply_event(self, event: GraphEvent, position: Position | None,
                     contributions: list[Contribution], announced: list[Announcement]) -> int:
        claimed: dict[str, RowState | None] = {}
        stale = 0
        for c in contributions:
            row = c.row
            if row in claimed:
                state = claimed[row]
            else:  # a row takes all of an event's contributions or none of them
                state = claimed[row] = self._claim(row, position)
            if state is None:
                stale += 1
            else:
                self.cache.add(row, state, c.column, c.weight, c.at_ms)
            # Announced even when the row already had it: after a crash between the HBase write and
            # the delta produce, the redelivery announces again, under the same delta id.
            if c.announce:
                announced.append(Announcement(event.event_id, event.event_time, c))
        return stale
