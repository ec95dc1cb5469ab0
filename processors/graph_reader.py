"""The feed's graph reader in a worker: rows the graph processor holds in memory, HBase for the rest.

The graph processor is the single writer of the graph rows (an HBase epoch fences any other), so
its cached rows are the freshest copy there is: reading them spares a feed most of its HBase
round trips and shows it the batch just applied, even before that batch is flushed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from prometheus_client import Counter

from sinks.hbase_graph import Edge, group_edges, node_key
from streams.events import NodeType
from streams.metrics import REGISTRY

GRAPH_READS = Counter("pinstream_feed_graph_rows_total",
                      "Graph rows a feed read, by source: the graph processor's cache or HBase.",
                      ["source"], registry=REGISTRY)
for _source in ("cache", "hbase"):
    GRAPH_READS.labels(_source)

Neighbours = dict[NodeType, dict[str, float]]


class RowPeek(Protocol):
    def peek(self, key: str) -> dict[str, Edge] | None: ...


class StoreNeighbours(Protocol):
    half_life_ms: float

    def neighbours(self, node_type: NodeType, node_ids: Sequence[str], *, at_ms: int | None = None
                   ) -> dict[str, Neighbours]: ...

    def now_ms(self) -> int: ...


class CachedGraphReader:
    """`GraphReader` over the processor's row cache, falling back to the store for rows not in it."""

    def __init__(self, store: StoreNeighbours, rows: RowPeek) -> None:
        self.store = store
        self.rows = rows

    def neighbours(self, node_type: NodeType, node_ids: Sequence[str]) -> dict[str, Neighbours]:
        moment = self.store.now_ms()
        out: dict[str, Neighbours] = {}
        missing: list[str] = []
        for node_id in dict.fromkeys(node_ids):
            edges = self.rows.peek(node_key(node_type, node_id))
            if edges is None:
                missing.append(node_id)
            elif edges:
                out[node_id] = group_edges(edges, moment, self.store.half_life_ms)
        GRAPH_READS.labels("cache").inc(len(node_ids) - len(missing))
        if missing:
            GRAPH_READS.labels("hbase").inc(len(missing))
            out.update(self.store.neighbours(node_type, missing, at_ms=moment))
        return out
