"""The pin graph in HBase: a row per node in `<prefix>_graph`, a cell `n:<neighbour>` per edge
holding its weight and update time; batched, idempotent writes, every failure a SinkError."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from math import exp2
from typing import NamedTuple, TypeVar

from sinks.hbase import (
    DEPENDENCY,
    GRAPH_TABLE,
    NEIGHBOUR_VALUE,
    WRITERS_TABLE,
    Connection,
    PinStore,
    neighbour_column,
)
from sinks.pool import ConnectionPool, PoolConfig
from streams.errors import ConfigError
from streams.events import NodeType
from streams.settings import Settings

T = TypeVar("T")

# Row keys and neighbour columns name a node by its type and id, so that a user, a pin and a board
# with the same id never share a row.
NODE_PREFIXES: dict[NodeType, str] = {NodeType.USER: "user", NodeType.PIN: "pin", NodeType.BOARD: "board"}
_TYPES_BY_PREFIX = {prefix: node_type for node_type, prefix in NODE_PREFIXES.items()}
# Rows of the graph processor's own bookkeeping (co-engagement sessions), never a graph node.
SESSION_PREFIX = "session"
# The cell holding, per source partition, the highest offset whose effect the row includes. Node
# columns always contain a ':', so this name cannot collide with a neighbour.
APPLIED_COLUMN = "~applied"
_APPLIED_CELL = neighbour_column(APPLIED_COLUMN)
_ROWS_PER_GET = 1000
_WRITER_ROW = b"graph"
_EPOCH_CELL = b"w:epoch"


def node_key(node_type: NodeType, node_id: str) -> str:
    """The row key (and neighbour column name) of a node, e.g. `pin:p00000042`."""
    if not node_id:
        raise ValueError("a node id must not be empty")
    return f"{NODE_PREFIXES[node_type]}:{node_id}"


def parse_node_key(key: str) -> tuple[NodeType, str]:
    """(type, id) of a node key; raises ValueError for a key that names no graph node."""
    prefix, _, node_id = key.partition(":")
    node_type = _TYPES_BY_PREFIX.get(prefix)
    if node_type is None or not node_id:
        raise ValueError(f"{key!r} is not a graph node key")
    return node_type, node_id


class Edge(NamedTuple):
    """An edge's weight as of `updated_ms` (epoch ms, event time); it halves every half-life."""

    weight: float
    updated_ms: int

    def at(self, moment_ms: int, half_life_ms: float) -> float:
        """The weight decayed (or, before `updated_ms`, grown back) to `moment_ms`."""
        return self.weight * exp2((self.updated_ms - moment_ms) / half_life_ms)

    def plus(self, weight: float, at_ms: int, half_life_ms: float) -> Edge:
        """This edge with `weight` added at `at_ms`, kept as its weight at its newest contribution:
        the result does not depend on the order contributions arrive in (up to rounding)."""
        if at_ms >= self.updated_ms:
            return Edge(self.weight * exp2((self.updated_ms - at_ms) / half_life_ms) + weight, at_ms)
        return Edge(self.weight + weight * exp2((at_ms - self.updated_ms) / half_life_ms), self.updated_ms)


def group_edges(edges: Mapping[str, Edge], moment_ms: int, half_life_ms: float
                ) -> dict[NodeType, dict[str, float]]:
    """A row's edges as neighbour weights decayed to `moment_ms`, grouped by neighbour type."""
    grouped: dict[NodeType, dict[str, float]] = {}
    for neighbour, edge in edges.items():
        prefix, _, neighbour_id = neighbour.partition(":")
        grouped.setdefault(_TYPES_BY_PREFIX[prefix], {})[neighbour_id] = edge.at(moment_ms, half_life_ms)
    return grouped


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One node's row: its edges and, per source partition, the last offset it includes."""

    edges: dict[str, Edge] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RowWrite:
    """Cells to put and columns to delete in one row; `applied`, when given, replaces the row's
    applied offsets in the same atomic row mutation as the edges."""

    row: str
    edges: Mapping[str, Edge] = field(default_factory=dict)
    deleted: Collection[str] = ()
    applied: Mapping[str, int] | None = None


def encode_applied(applied: Mapping[str, int]) -> bytes:
    # Plain text, one `stream<TAB>offset` per line: readable from the HBase shell.
    return "\n".join(f"{stream}\t{offset}" for stream, offset in sorted(applied.items())).encode()


def decode_applied(value: bytes) -> dict[str, int]:
    applied: dict[str, int] = {}
    for line in value.decode().splitlines():
        stream, _, offset = line.rpartition("\t")
        applied[stream] = int(offset)
    return applied


def decode_row(cells: Mapping[bytes, bytes]) -> StoredRow:
    row = StoredRow()
    unpack = NEIGHBOUR_VALUE.unpack
    for column, value in cells.items():
        if column == _APPLIED_CELL:
            row.applied.update(decode_applied(value))
        else:
            row.edges[column[2:].decode()] = Edge(*unpack(value))
    return row


def encode_write(write: RowWrite) -> dict[bytes, bytes]:
    # The layout of sinks.hbase.encode_neighbour, packed from epoch ms directly: converting every
    # cell's time to a datetime and back cost more than the rest of the encoding.
    pack = NEIGHBOUR_VALUE.pack
    cells = {neighbour_column(column): pack(edge.weight, edge.updated_ms)
             for column, edge in write.edges.items()}
    if write.applied is not None:
        cells[_APPLIED_CELL] = encode_applied(write.applied)
    return cells


class GraphStore:
    """Graph rows in HBase through the bounded pool; each call borrows one connection.

    Writes are absolute values (never increments), so writing the same batch twice changes
    nothing. Cells are stamped with a write clock that never goes backwards in one store, so the
    newest write wins and a deleted column can be written again.
    """

    def __init__(self, pool: ConnectionPool[Connection], *, half_life_s: float = 7 * 86_400.0,
                 cells_per_rpc: int = 5_000, clock: Callable[[], float] = time.time) -> None:
        if cells_per_rpc < 1 or half_life_s <= 0:
            raise ConfigError("cells_per_rpc must be >= 1 and half_life_s > 0")
        # PinStore owns the HBase boundary (pool borrow, error translation, metrics, tables);
        # the graph store goes through it rather than repeating it.
        self._hbase = PinStore(pool)
        self.pool = pool
        self.half_life_ms = half_life_s * 1000.0
        self.cells_per_rpc = cells_per_rpc
        self._clock = clock
        self._last_stamp = 0
        self._stamp_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_s: float = 5.0, cells_per_rpc: int = 5_000,
                      pool_config: PoolConfig | None = None, create_tables: bool = True) -> GraphStore:
        """A store on `settings.hbase_*` with a pool of its own; creates the tables when missing."""
        config = pool_config or PoolConfig(
            name=f"hbase-graph-{settings.hbase_table_prefix}", dependency=DEPENDENCY,
            max_size=settings.hbase_pool_size, acquire_timeout_s=timeout_s,
        )
        pins = PinStore.from_settings(settings, timeout_s=timeout_s, pool_config=config,
                                      create_tables=create_tables)
        return cls(pins.pool, half_life_s=settings.graph_half_life_s, cells_per_rpc=cells_per_rpc)

    # --- the sink contract ------------------------------------------------------------------

    def write_batch(self, rows: Sequence[RowWrite]) -> None:
        """Apply every row write (puts, column deletes, applied offsets), one atomic mutation per row."""
        if not rows:
            return
        stamp = self._next_stamp()
        encoded = [(write.row.encode(), encode_write(write), write.deleted) for write in rows]

        def write(conn: Connection) -> None:
            # Sent by hand rather than by happybase's batch_size, which may split one row's
            # mutations over two round trips: a row's cells and applied offsets must land together.
            batch = conn.table(GRAPH_TABLE).batch(timestamp=stamp)
            pending = 0
            for key, put, deleted in encoded:
                if deleted:
                    batch.delete(key, columns=[neighbour_column(column) for column in deleted])
                if put:
                    batch.put(key, put)
                pending += len(put) + len(deleted)
                if pending >= self.cells_per_rpc:
                    batch.send()
                    pending = 0
            batch.send()

        self._call("graph_write", write, len(encoded))

    def flush(self) -> None:
        """Nothing to do: every write call returns only once HBase has acknowledged it."""

    def close(self) -> None:
        self.pool.close()

    def ensure_tables(self) -> None:
        self._hbase.ensure_tables()

    # --- the single writer ------------------------------------------------------------------

    def claim_writer(self) -> int:
        """A new writer epoch of the graph (an atomic HBase increment): from now on, a writer
        holding an older epoch must stop writing."""
        return int(self._call("claim_writer", lambda conn: conn.table(WRITERS_TABLE).counter_inc(
            _WRITER_ROW, _EPOCH_CELL), 1))

    def writer_epoch(self) -> int:
        """The newest claimed writer epoch (0 when none was ever claimed)."""
        return int(self._call("writer_epoch", lambda conn: conn.table(WRITERS_TABLE).counter_get(
            _WRITER_ROW, _EPOCH_CELL), 1))

    # --- reads --------------------------------------------------------------------------------

    def read_rows(self, keys: Iterable[str]) -> dict[str, StoredRow]:
        """The stored rows among `keys` (absent rows are left out), one round trip per 1000."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}

        def read(conn: Connection) -> dict[str, StoredRow]:
            table = conn.table(GRAPH_TABLE)
            found: dict[str, StoredRow] = {}
            for start in range(0, len(wanted), _ROWS_PER_GET):
                chunk = [key.encode() for key in wanted[start:start + _ROWS_PER_GET]]
                for key, cells in table.rows(chunk, columns=[b"n"]):
                    found[key.decode()] = decode_row(cells)
            return found

        return self._call("graph_read", read, len(wanted))

    def edges(self, node: str) -> dict[str, Edge]:
        """Every edge of `node` (a node key), by neighbour key; empty for an unknown node."""
        return self.edges_many([node]).get(node, {})

    def edges_many(self, nodes: Iterable[str]) -> dict[str, dict[str, Edge]]:
        """The edges of many nodes in batched round trips; unknown nodes map to no edges."""
        wanted = list(nodes)
        rows = self.read_rows(wanted)
        return {node: rows[node].edges if node in rows else {} for node in wanted}

    def neighbours(self, node_type: NodeType, node_ids: Sequence[str], *, at_ms: int | None = None
                   ) -> dict[str, dict[NodeType, dict[str, float]]]:
        """Each known node's neighbours grouped by type, weights decayed to `at_ms` (default now);
        unknown nodes are absent. The feed's graph reader."""
        moment = at_ms if at_ms is not None else self.now_ms()
        keys = {node_key(node_type, node_id): node_id for node_id in node_ids}
        out: dict[str, dict[NodeType, dict[str, float]]] = {}
        for key, row in self.read_rows(keys).items():
            grouped = group_edges(row.edges, moment, self.half_life_ms)
            if grouped:
                out[keys[key]] = grouped
        return out

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def top_neighbours(self, node: str, n: int, *, neighbour_type: NodeType | None = None,
                       at_ms: int | None = None) -> list[tuple[str, float]]:
        """The `n` heaviest neighbours (optionally of one type) with their weights decayed to
        `at_ms` (default: the row's newest update). The order does not depend on `at_ms`."""
        edges = self.edges(node)
        if neighbour_type is not None:
            prefix = NODE_PREFIXES[neighbour_type] + ":"
            edges = {key: edge for key, edge in edges.items() if key.startswith(prefix)}
        if not edges:
            return []
        moment = at_ms if at_ms is not None else max(edge.updated_ms for edge in edges.values())
        weighted = [(key, edge.at(moment, self.half_life_ms)) for key, edge in edges.items()]
        weighted.sort(key=lambda item: (-item[1], item[0]))
        return weighted[:n]

    def scan(self, prefix: str = "") -> dict[str, StoredRow]:
        """Every row whose key starts with `prefix`: for rebuilds and invariant checks, not serving."""

        def read(conn: Connection) -> dict[str, StoredRow]:
            table = conn.table(GRAPH_TABLE)
            return {key.decode(): decode_row(cells)
                    for key, cells in table.scan(row_prefix=prefix.encode() or None, batch_size=1000)}

        return self._call("graph_scan", read, 0)

    # --- deletes ------------------------------------------------------------------------------

    def delete_edges(self, edges: Iterable[tuple[str, str]]) -> None:
        """Remove the edges (row node, neighbour node); each direction of a pair is its own edge."""
        by_row: dict[str, list[str]] = defaultdict(list)
        for row, neighbour in edges:
            by_row[row].append(neighbour)
        self.write_batch([RowWrite(row, deleted=columns) for row, columns in by_row.items()])

    def delete_rows(self, rows: Iterable[str]) -> None:
        """Remove whole rows (a node's every edge and its applied offsets)."""
        keys = [row.encode() for row in dict.fromkeys(rows)]
        if not keys:
            return
        stamp = self._next_stamp()

        def delete(conn: Connection) -> None:
            batch = conn.table(GRAPH_TABLE).batch(timestamp=stamp, batch_size=_ROWS_PER_GET)
            for key in keys:
                batch.delete(key)
            batch.send()

        self._call("graph_delete", delete, len(keys))

    # --- the boundary -------------------------------------------------------------------------

    def _next_stamp(self) -> int:
        # A delete hides every older-or-equal cell until compaction: a later write must carry a
        # strictly larger timestamp, even within the same millisecond.
        with self._stamp_lock:
            self._last_stamp = max(int(self._clock() * 1000), self._last_stamp + 1)
            return self._last_stamp

    def _call(self, op: str, work: Callable[[Connection], T], rows: int) -> T:
        return self._hbase._call(op, work, rows)
