"""The graph rows a live patch process plans from: read through from HBase, then kept current by
the row writes the graph stage pushes after each flush (absolute cell values, not increments).

The graph stage is the single writer of these rows, and it pushes every user and pin row it
writes. A cached row is therefore as fresh as HBase plus the pushes in flight. A push that comes
while the row is being read is applied on top of the read once it lands (in arrival order, so the
newest write wins). When the graph stage could not push (its bounded queue was full), it sends a
`forget everything` instead, and rows are read again. Each row is also read again after `ttl_s`.

A cached row's dict is never changed in place (a write replaces it), so `peek` hands it out
without a copy and a planner may read it while pushes arrive in another thread.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from sinks.hbase_graph import Edge, RowWrite, StoredRow


class RowReader(Protocol):
    def read_rows(self, keys: Iterable[str]) -> Mapping[str, StoredRow]: ...


class LiveRows:
    """A bounded LRU of graph rows (edges only) for live patches; thread-safe."""

    def __init__(self, store: RowReader, *, max_cells: int, ttl_s: float, half_life_ms: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.max_cells = max_cells
        self.ttl_s = ttl_s
        self.half_life_ms = half_life_ms
        self.clock = clock
        self.cells = 0
        self.reads = 0  # rows read from the store
        self.pushes = 0  # pushed row writes applied to cached rows
        self._rows: OrderedDict[str, tuple[float, dict[str, Edge]]] = OrderedDict()
        self._reading: dict[str, list[RowWrite]] = {}  # rows being read: the pushes meanwhile
        self._generation = 0  # moves on at each `forget`: reads started before it are not kept
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def peek(self, key: str) -> dict[str, Edge] | None:
        with self._lock:
            entry = self._rows.get(key)
            return None if entry is None else entry[1]

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys among `keys` that `refresh` would read now (not cached, or older than `ttl_s`),
        without reading them: a caller can skip handing `refresh` to a thread when none is."""
        now = self.clock()
        with self._lock:
            return self._wanted(keys, now)

    def refresh(self, keys: Iterable[str]) -> int:
        """Read the rows among `keys` that are not cached or are older than `ttl_s`; returns how
        many were read. Raises SinkError (nothing changed) when the store fails."""
        now = self.clock()
        with self._lock:
            generation = self._generation
            wanted = self._wanted(keys, now)
            for key in wanted:
                self._reading[key] = []
        if not wanted:
            return 0
        try:
            stored = self.store.read_rows(wanted)
        except BaseException:
            with self._lock:
                for key in wanted:
                    self._reading.pop(key, None)
            raise
        with self._lock:
            self.reads += len(wanted)
            for key in wanted:
                pending = self._reading.pop(key, [])
                if generation != self._generation:
                    continue  # pushes may have been lost while it was read: read again next time
                row = stored.get(key)
                edges = dict(row.edges) if row is not None else {}
                for write in pending:
                    edges = _applied(edges, write)
                self._put(key, now, edges)
            self._trim()
        return len(wanted)

    def written(self, writes: Sequence[RowWrite]) -> None:
        """The graph stage wrote these rows: update the cached ones (others are read when needed)."""
        with self._lock:
            for write in writes:
                pending = self._reading.get(write.row)
                if pending is not None:
                    pending.append(write)
                entry = self._rows.get(write.row)
                if entry is not None:
                    edges = _applied(entry[1], write)
                    self._rows[write.row] = (entry[0], edges)
                    self.cells += len(edges) - len(entry[1])
                    self.pushes += 1
            self._trim()

    def forget(self) -> None:
        """Drop every row (pushes were lost): each is read again when next needed."""
        with self._lock:
            self._rows.clear()
            self.cells = 0
            self._generation += 1

    def note(self, key: str, column: str, weight: float, at_ms: int) -> None:
        """Add an engagement this process saw to a cached row before the graph stage's write of it
        comes back (a pin engaged a moment ago is not lifted again by the next patch)."""
        with self._lock:
            entry = self._rows.get(key)
            if entry is None:
                return
            edge = entry[1].get(column)
            if edge is None:
                self.cells += 1
            edges = {**entry[1], column: Edge(weight, at_ms) if edge is None
                     else edge.plus(weight, at_ms, self.half_life_ms)}
            self._rows[key] = (entry[0], edges)

    # --- internals (lock held) ---------------------------------------------------------------------

    def _wanted(self, keys: Iterable[str], now: float) -> list[str]:
        """The keys to read now, each once: not being read already, and not cached or expired."""
        return [key for key in dict.fromkeys(keys) if key not in self._reading and self._expired(key, now)]

    def _expired(self, key: str, now: float) -> bool:
        entry = self._rows.get(key)
        return entry is None or now - entry[0] >= self.ttl_s

    def _put(self, key: str, now: float, edges: dict[str, Edge]) -> None:
        old = self._rows.pop(key, None)
        if old is not None:
            self.cells -= 1 + len(old[1])
        self._rows[key] = (now, edges)
        self.cells += 1 + len(edges)

    def _trim(self) -> None:
        while self.cells > self.max_cells and self._rows:
            _, (_, edges) = self._rows.popitem(last=False)
            self.cells -= 1 + len(edges)


def _applied(edges: dict[str, Edge], write: RowWrite) -> dict[str, Edge]:
    """A new dict: a row write's cells over a cached row (changed edges put, deleted ones dropped)."""
    out = {**edges, **write.edges}
    for column in write.deleted:
        out.pop(column, None)
    return out
