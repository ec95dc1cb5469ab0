"""State of the graph processor: recent event ids per partition, an LRU of graph rows read
through from HBase with the writes they owe it, and how a co-engagement session's pins pair up."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from typing import NamedTuple, Protocol

from prometheus_client import Counter, Gauge

from sinks.hbase_graph import SESSION_PREFIX, Edge, RowWrite, StoredRow
from streams.metrics import REGISTRY
from streams.topics import HEADER_REPLAY_OF

GRAPH_EVENTS = Counter("pinstream_graph_events_total",
                       "Events seen by the graph processor, by outcome (applied, duplicate).",
                       ["outcome"], registry=REGISTRY)
GRAPH_STALE = Counter("pinstream_graph_stale_contributions_total",
                      "Edge contributions skipped because their row already includes them (redelivery).",
                      registry=REGISTRY)
GRAPH_ROWS_READ = Counter("pinstream_graph_rows_read_total",
                          "Graph rows read from HBase on a cache miss.", registry=REGISTRY)
GRAPH_CACHED_CELLS = Gauge("pinstream_graph_cached_cells", "Graph cells held in the processor's cache.",
                           registry=REGISTRY)


class Position(NamedTuple):
    """Where an event was first written: `stream` = "topic/partition", and its offset there."""

    stream: str
    offset: int


class SourceRecord(Protocol):
    """A consumed record (RawRecord or ConsumedRecord): where it was read and its headers."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def headers(self) -> tuple[tuple[str, bytes], ...]: ...


def position_of(record: SourceRecord) -> Position:
    """The record's original position: a replayed copy names its original in a header, so a
    replay and the record it copies count as one."""
    for name, value in record.headers:
        if name == HEADER_REPLAY_OF:  # the first one: a replay of a replay keeps the original's
            stream, _, offset = value.decode().rpartition("/")
            return Position(stream, int(offset))
    return Position(f"{record.topic}/{record.partition}", record.offset)


class GraphRowStore(Protocol):
    """What the processor needs of the graph store (sinks.hbase_graph.GraphStore in production)."""

    def read_rows(self, keys: Iterable[str]) -> Mapping[str, StoredRow]: ...

    def write_batch(self, rows: list[RowWrite]) -> None: ...


class SeenIds:
    """The most recent `per_stream` event ids of each stream (partition), oldest forgotten first;
    an id counts as seen whichever stream it was seen in."""

    def __init__(self, per_stream: int) -> None:
        self.per_stream = per_stream
        self._owner: dict[int, str] = {}  # id -> the stream that saw it last: one lookup per event
        self._order: dict[str, deque[int]] = {}

    def __contains__(self, event_id: int) -> bool:
        return event_id in self._owner

    def add(self, stream: str, event_id: int) -> None:
        if self.per_stream == 0:
            return
        order = self._order.get(stream)
        if order is None:
            order = self._order[stream] = deque()
        owner = self._owner.get(event_id)
        if owner is not None:
            self._order[owner].remove(event_id)  # rare: an id seen again in another stream
        self._owner[event_id] = stream
        order.append(event_id)
        if len(order) > self.per_stream:
            del self._owner[order.popleft()]

    def forget(self, stream: str) -> None:
        """Drop a stream's ids (its partition was revoked: another worker owns it now)."""
        for event_id in self._order.pop(stream, ()):
            del self._owner[event_id]

    def __len__(self) -> int:
        return len(self._owner)


class RowState:
    """One cached row: its edges, applied offsets, and what changed since it was last written."""

    __slots__ = ("applied", "applied_dirty", "changed", "deleted", "edges")

    def __init__(self, stored: StoredRow | None) -> None:
        self.edges: dict[str, Edge] = dict(stored.edges) if stored else {}
        self.applied: dict[str, int] = dict(stored.applied) if stored else {}
        self.changed: set[str] = set()
        self.deleted: set[str] = set()
        self.applied_dirty = False

    @property
    def dirty(self) -> bool:
        return bool(self.changed or self.deleted or self.applied_dirty)

    def pending_write(self, key: str) -> RowWrite:
        return RowWrite(key, {column: self.edges[column] for column in self.changed},
                        tuple(self.deleted), dict(self.applied) if self.applied_dirty else None)

    def written(self) -> None:
        self.changed.clear()
        self.deleted.clear()
        self.applied_dirty = False


class RowCache:
    """Graph rows by key, least recently used first; at most `max_cells` cells once trimmed (a
    row counts one cell more than its edges, so that empty rows are bounded too).

    Rows with unwritten changes are never evicted: they are the only copy of that state until the
    next successful flush. Between trims (one batch) the cache may exceed its bound by the rows
    that batch touches.
    """

    def __init__(self, max_cells: int, half_life_ms: float) -> None:
        self.max_cells = max_cells
        self.half_life_ms = half_life_ms
        self.cells = 0
        self._rows: OrderedDict[str, RowState] = OrderedDict()
        self._dirty: set[str] = set()

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def missing(self, keys: Iterable[str]) -> list[str]:
        rows = self._rows
        return [key for key in dict.fromkeys(keys) if key not in rows]

    def load(self, keys: Iterable[str], stored: Mapping[str, StoredRow]) -> None:
        """Cache the rows read for `keys`; a key absent from `stored` is a new, empty row."""
        for key in keys:
            if key not in self._rows:
                state = RowState(stored.get(key))
                self._rows[key] = state
                self.cells += 1 + len(state.edges)

    def peek(self, key: str) -> dict[str, Edge] | None:
        """A copy of a cached row's edges (None when not cached), without touching the LRU order.
        Safe beside `apply` in another thread: the lookup and the dict copy run in C, under the GIL."""
        state = self._rows.get(key)
        return None if state is None else dict(state.edges)

    def get(self, key: str) -> RowState:
        """A cached row (load it first); marks it recently used."""
        self._rows.move_to_end(key)
        return self._rows[key]

    def mark_applied(self, key: str, state: RowState, stream: str, offset: int) -> None:
        state.applied[stream] = offset
        state.applied_dirty = True
        self._dirty.add(key)

    def add(self, key: str, state: RowState, column: str, weight: float, at_ms: int) -> None:
        """Add `weight` at time `at_ms` to an edge kept as its weight at its newest contribution."""
        edge = state.edges.get(column)
        if edge is None:
            state.edges[column] = Edge(weight, at_ms)
            self.cells += 1
            state.deleted.discard(column)
        else:
            state.edges[column] = edge.plus(weight, at_ms, self.half_life_ms)
        state.changed.add(column)
        self._dirty.add(key)

    def put(self, key: str, state: RowState, column: str, edge: Edge) -> None:
        if column not in state.edges:
            self.cells += 1
        state.edges[column] = edge
        state.deleted.discard(column)
        state.changed.add(column)
        self._dirty.add(key)

    def delete(self, key: str, state: RowState, column: str) -> None:
        if state.edges.pop(column, None) is not None:
            self.cells -= 1
        state.changed.discard(column)
        state.deleted.add(column)
        self._dirty.add(key)

    def pending_writes(self) -> tuple[list[RowWrite], list[RowWrite]]:
        """(graph rows, session rows) with unwritten changes. Session rows must be written after
        the graph rows: a session row says which of its events the graph rows already include."""
        graph: list[RowWrite] = []
        sessions: list[RowWrite] = []
        for key in self._dirty:
            state = self._rows[key]
            if state.dirty:
                (sessions if key.startswith(SESSION_PREFIX + ":") else graph).append(state.pending_write(key))
        return graph, sessions

    def written(self, writes: Iterable[RowWrite]) -> None:
        """Mark rows clean once HBase acknowledged their writes (nothing changed them since)."""
        for write in writes:
            state = self._rows.get(write.row)
            if state is not None:
                state.written()
            self._dirty.discard(write.row)

    def trim(self) -> int:
        """Evict clean rows, least recently used first, down to `max_cells`; returns rows evicted."""
        victims: list[str] = []
        excess = self.cells - self.max_cells
        for key, state in self._rows.items():  # least recently used first
            if excess <= 0:
                break
            if key not in self._dirty:
                victims.append(key)
                excess -= 1 + len(state.edges)
        for key in victims:
            self.cells -= 1 + len(self._rows.pop(key).edges)
        GRAPH_CACHED_CELLS.set(self.cells)
        return len(victims)


# --- co-engagement sessions: which pins of a session pair up ---------------------------------

def session_pairs(first_engaged: Mapping[str, int], max_pins: int) -> dict[tuple[str, str], int]:
    """Co-engaged pairs of a session: among its first `max_pins` pins by first engagement (time,
    then key), every pair, at the time the later of the two was first engaged."""
    members = sorted(first_engaged.items(), key=lambda item: (item[1], item[0]))[:max_pins]
    pairs: dict[tuple[str, str], int] = {}
    for index, (later, later_ms) in enumerate(members):
        for earlier, _ in members[:index]:
            pairs[(earlier, later) if earlier < later else (later, earlier)] = later_ms
    return pairs


class SessionChange(NamedTuple):
    members: dict[str, int]
    added: list[tuple[str, str, int]]
    retracted: list[tuple[str, str, int]]


def admit(members: Mapping[str, int], pin: str, at_ms: int, max_pins: int) -> SessionChange | None:
    """The session after `pin` is engaged at `at_ms`, and the pairs that changed; None if none.

    `members` holds only the first `max_pins` pins: one that ranks after them can never enter
    later, since first-engagement times only move earlier. A late event may move a pin earlier
    or push another out; its pairs are then retracted and added at their new times.
    """
    first = members.get(pin)
    if first is not None and first <= at_ms:
        return None
    rank = (at_ms, pin)
    if first is None and all(rank > (ms, key) for key, ms in members.items()):
        if len(members) >= max_pins:
            return None
        # In event-time order, the common case: pairs with every member, nothing moves.
        return SessionChange({**members, pin: at_ms}, [(key, pin, at_ms) for key in members], [])
    ranked = sorted({**members, pin: at_ms}.items(), key=lambda item: (item[1], item[0]))
    kept = dict(ranked[:max_pins])
    if pin not in kept:
        return None
    before, after = session_pairs(members, max_pins), session_pairs(kept, max_pins)
    return SessionChange(
        kept,
        [(a, b, ms) for (a, b), ms in after.items() if before.get((a, b)) != ms],
        [(a, b, ms) for (a, b), ms in before.items() if after.get((a, b)) != ms],
    )
