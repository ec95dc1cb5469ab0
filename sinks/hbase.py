"""The HBase pin store over Thrift1 (happybase): pin metadata, embeddings and embedding status in
`<prefix>_pins`, the neighbour graph in `<prefix>_graph`; every failure surfaces as a SinkError."""

from __future__ import annotations

import json
import re
import struct
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

import happybase
import numpy as np
import numpy.typing as npt
from thriftpy2.thrift import TException

from sinks.hbase_metrics import HBASE_ERRORS, HBASE_ROWS, HBASE_SECONDS
from sinks.pool import ConnectionPool, PoolConfig
from streams.errors import ConfigError, InputError, SinkError
from streams.events import PinCreated, PinEmbedding, datetime_of_millis, utc_now
from streams.settings import Settings

T = TypeVar("T")
Connection = Any  # happybase.Connection: the library ships no type information
Row = dict[bytes, bytes]

DEPENDENCY = "hbase"
PINS_TABLE = "pins"
GRAPH_TABLE = "graph"
WRITERS_TABLE = "writers"  # epochs of single-writer stages (the graph stage): fencing tokens
# One version per cell: with the event time as the cell timestamp, HBase itself keeps the newest
# event whatever order writes arrive in (replays, redeliveries, the reconciler re-driving).
# happybase's descriptor defaults switch the block cache off; metadata is what reads hit. Vectors
# are searched in the ANN index, so reading one must not evict the hot metadata blocks.
_CACHED = {"max_versions": 1, "block_cache_enabled": True, "bloom_filter_type": "ROW"}
TABLE_FAMILIES: dict[str, dict[str, dict[str, Any]]] = {
    PINS_TABLE: {"m": _CACHED, "e": {**_CACHED, "block_cache_enabled": False}, "s": _CACHED},
    GRAPH_TABLE: {"n": _CACHED},
    WRITERS_TABLE: {"w": {"max_versions": 1}},
}
EMBEDDING_DTYPE = np.dtype("<f4")
STATUS_READY = b"ready"
STATUS_PENDING = b"pending"
# A Thrift or socket failure means the server is down or unreachable: no point retrying at once.
RETRY_AFTER_UNREACHABLE_S = 5.0
RETRY_AFTER_SERVER_ERROR_S = 1.0
_MAX_ERROR_CHARS = 500
_MAX_ROWS_PER_GET = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Graph cells (written by the graph processor): column `n:<node id>`, value weight + update time.
NEIGHBOUR_VALUE = struct.Struct(">dq")


@dataclass(frozen=True, slots=True)
class PinRecord:
    """One stored pin: its metadata, and its embedding when one has landed (read-only float32)."""

    pin_id: str
    user_id: str
    board_id: str
    title: str
    description: str
    link: str | None
    tags: tuple[str, ...]
    image_ref: str | None
    image_url: str | None
    event_id: uuid.UUID
    event_time: datetime
    embedding: npt.NDArray[np.float32] | None = field(default=None, compare=False, repr=False)
    model_id: str | None = None
    model_version: str | None = None
    pending_embedding: str | None = None  # why the pin awaits a (re-)embedding, when it does


_ONE_MS = timedelta(milliseconds=1)


def millis(moment: datetime) -> int:
    """Milliseconds since the epoch (naive datetimes are taken as UTC), exact for event times."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_MS


from_millis = datetime_of_millis  # the inverse of `millis`


def encode_neighbour(weight: float, updated_at: datetime) -> bytes:
    return NEIGHBOUR_VALUE.pack(weight, millis(updated_at))


def decode_neighbour(value: bytes) -> tuple[float, datetime]:
    weight, updated = NEIGHBOUR_VALUE.unpack(value)
    return weight, from_millis(updated)


def neighbour_column(node_id: str) -> bytes:
    return b"n:" + node_id.encode()


def row_key(pin_id: str) -> bytes:
    if not pin_id:
        raise ValueError("a pin id must not be empty")
    return pin_id.encode()


def _text(value: str | None) -> bytes:
    # Every column is written on every event, absent values as b"", so that a newer event with
    # fewer fields never shows through an older event's leftover cells.
    return value.encode() if value else b""


def pin_cells(pin: PinCreated) -> Row:
    return {
        b"m:title": _text(pin.title),
        b"m:description": _text(pin.description),
        b"m:board": _text(pin.board_id),
        b"m:user": _text(pin.user_id),
        b"m:link": _text(pin.link),
        b"m:tags": json.dumps(list(pin.tags)).encode(),
        b"m:image_ref": _text(pin.image_ref),
        b"m:image_url": _text(pin.image_url),
        b"m:event_time": str(millis(pin.event_time)).encode(),
        b"m:event_id": str(pin.event_id).encode(),
    }


@lru_cache(maxsize=8)
def _float32_packer(dim: int) -> struct.Struct:
    # Twice as fast as going through numpy for a tuple of Python floats (what the codec yields).
    return struct.Struct(f"<{dim}f")


def embedding_cells(embedding: PinEmbedding) -> Row:
    try:
        vector = _float32_packer(len(embedding.vector)).pack(*embedding.vector)
    except (struct.error, OverflowError, TypeError) as exc:
        raise InputError(f"the embedding of pin {embedding.pin_id} is not a float32 vector: {exc}",
                         field="vector") from exc
    return {
        b"e:vector": vector,
        b"e:model_id": _text(embedding.model_id),
        b"e:model_version": _text(embedding.model_version),
        b"e:event_id": str(embedding.event_id).encode(),
        b"e:source_event_id": str(embedding.source_event_id).encode(),
        b"s:embedding": STATUS_READY,
        b"s:reason": b"",
    }


def decode_pin(pin_id: str, row: Row) -> PinRecord | None:
    """The record of a stored row, or None when its metadata has not landed (only status/embedding)."""
    event_id = row.get(b"m:event_id")
    if not event_id:
        return None

    def text(column: bytes) -> str:
        return row.get(column, b"").decode()

    vector = row.get(b"e:vector")
    pending = row.get(b"s:embedding") == STATUS_PENDING
    return PinRecord(
        pin_id=pin_id,
        user_id=text(b"m:user"),
        board_id=text(b"m:board"),
        title=text(b"m:title"),
        description=text(b"m:description"),
        link=text(b"m:link") or None,
        tags=tuple(json.loads(row.get(b"m:tags") or b"[]")),
        image_ref=text(b"m:image_ref") or None,
        image_url=text(b"m:image_url") or None,
        event_id=uuid.UUID(event_id.decode()),
        event_time=from_millis(int(row[b"m:event_time"])),
        embedding=np.frombuffer(vector, dtype=EMBEDDING_DTYPE) if vector else None,
        model_id=text(b"e:model_id") or None,
        model_version=text(b"e:model_version") or None,
        pending_embedding=(text(b"s:reason") or "unknown") if pending else None,
    )


def describe(exc: BaseException) -> str:
    """A short one-line text of a Thrift/socket error (HBase errors carry whole Java traces)."""
    message = getattr(exc, "message", None) or str(exc) or repr(exc)
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else repr(exc)
    return f"{type(exc).__name__}: {first_line}"[:_MAX_ERROR_CHARS]


def store_unreachable(error: SinkError) -> bool:
    """True when HBase (or its Thrift server) did not answer at all, as opposed to refusing a call:
    waiting is then the cure, and nothing about the request itself is wrong."""
    return error.dependency == DEPENDENCY and error.retry_after == RETRY_AFTER_UNREACHABLE_S


def _retry_after(exc: BaseException) -> float:
    server_side = isinstance(exc, TException) and type(exc).__name__ in ("IOError", "IllegalArgument")
    return RETRY_AFTER_SERVER_ERROR_S if server_side else RETRY_AFTER_UNREACHABLE_S


class PinStore:
    """Pins in HBase through a bounded pool; writes are batched, idempotent and newest-wins.

    Each call borrows one connection; a Thrift or socket error discards that connection and raises
    SinkError(dependency="hbase"), so the caller can emit a reconciliation record.
    """

    def __init__(self, pool: ConnectionPool[Connection], *, rows_per_rpc: int = 100) -> None:
        if rows_per_rpc < 1:
            raise ConfigError("rows_per_rpc must be >= 1")
        self.pool = pool
        self.rows_per_rpc = rows_per_rpc

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_s: float = 5.0, rows_per_rpc: int = 100,
                      pool_config: PoolConfig | None = None, create_tables: bool = True) -> PinStore:
        """A store on `settings.hbase_*`; creates the tables when missing (and checks them)."""
        config = pool_config or PoolConfig(
            name=f"hbase-{settings.hbase_table_prefix}", dependency=DEPENDENCY,
            max_size=settings.hbase_pool_size, acquire_timeout_s=timeout_s,
        )
        store = cls(hbase_pool(settings.hbase_host, settings.hbase_port, settings.hbase_table_prefix,
                               config, timeout_s=timeout_s), rows_per_rpc=rows_per_rpc)
        if create_tables:
            try:
                store.ensure_tables()
            except BaseException:
                store.close()
                raise
        return store

    # --- the sink contract ------------------------------------------------------------------

    def write_batch(self, items: Sequence[PinCreated | PinEmbedding]) -> None:
        """Pins and embeddings in one call (each kind in its own round trips)."""
        self.write_pins([item for item in items if isinstance(item, PinCreated)])
        self.write_embeddings([item for item in items if isinstance(item, PinEmbedding)])

    def flush(self) -> None:
        """Nothing to do: every write call returns only once HBase has acknowledged it."""

    def close(self) -> None:
        self.pool.close()

    # --- writes -------------------------------------------------------------------------------

    def write_pins(self, pins: Sequence[PinCreated]) -> None:
        """Store each pin's metadata, stamped with its event time (an older event never wins)."""
        self._put_stamped("write_pins", [(pin.pin_id, pin.event_time, pin_cells(pin)) for pin in pins])

    def write_embeddings(self, embeddings: Sequence[PinEmbedding]) -> None:
        """Store vectors (float32) with model id and version; clears a pending-embedding mark."""
        self._put_stamped("write_embeddings",
                          [(e.pin_id, e.event_time, embedding_cells(e)) for e in embeddings])

    def mark_pending_embedding(self, pin_id: str, reason: str, *, at: datetime | None = None) -> None:
        """Record that the pin is stored without visual features and awaits a re-embedding.

        Pass the pin's event time as `at`: any embedding computed later then supersedes the mark.
        """
        cells = {b"s:embedding": STATUS_PENDING, b"s:reason": reason.encode() or b"unknown"}
        self._put_stamped("mark_pending", [(pin_id, at or utc_now(), cells)])

    def delete_pin(self, pin_id: str, *, at: datetime | None = None) -> None:
        """Delete the pin's cells up to `at` (default now); a pin event newer than that survives."""
        key, stamp = row_key(pin_id), millis(at or utc_now())
        self._call("delete_pin", lambda conn: conn.table(PINS_TABLE).delete(key, timestamp=stamp), 1)

    def _put_stamped(self, op: str, rows: Sequence[tuple[str, datetime, Row]]) -> None:
        if not rows:
            return
        # Thrift1 takes one timestamp per mutateRowsTs call: one batch per distinct event time.
        by_stamp: dict[int, list[tuple[bytes, Row]]] = defaultdict(list)
        for pin_id, moment, cells in rows:
            by_stamp[millis(moment)].append((row_key(pin_id), cells))
        cells_per_row = max(len(cells) for _, _, cells in rows)

        def write(conn: Connection) -> None:
            table = conn.table(PINS_TABLE)
            for stamp, stamped in by_stamp.items():
                batch = table.batch(timestamp=stamp, batch_size=self.rows_per_rpc * cells_per_row)
                for key, cells in stamped:
                    batch.put(key, cells)
                batch.send()

        self._call(op, write, len(rows))

    # --- reads --------------------------------------------------------------------------------

    def get_pins(self, pin_ids: Iterable[str], *, with_embedding: bool = True) -> dict[str, PinRecord]:
        """The stored pins among `pin_ids` (unknown ones are absent), in one round trip per 1000."""
        wanted = list(dict.fromkeys(pin_ids))
        if not wanted:
            return {}
        columns = [b"m", b"s", b"e"] if with_embedding else [b"m", b"s", b"e:model_id", b"e:model_version"]

        def read(conn: Connection) -> dict[str, PinRecord]:
            table = conn.table(PINS_TABLE)
            found: dict[str, PinRecord] = {}
            for start in range(0, len(wanted), _MAX_ROWS_PER_GET):
                keys = [row_key(pin_id) for pin_id in wanted[start:start + _MAX_ROWS_PER_GET]]
                for key, row in table.rows(keys, columns=columns):
                    record = decode_pin(key.decode(), row)
                    if record is not None:
                        found[record.pin_id] = record
            return found

        return self._call("get_pins", read, len(wanted))

    # --- tables -------------------------------------------------------------------------------

    def match_text(self, text: str, limit: int, *, max_scanned: int = 5_000) -> list[str]:
        """Pin ids whose title or description contain the words of `text`, best first.

        A server-side filtered scan (case-insensitive substring on the longest word), bounded by
        `max_scanned` rows, ranked here by how many of the words each pin contains: the text
        fallback of visual search, not a search engine.
        """
        words = [w for w in re.findall(r"[\w-]+", text.lower()) if len(w) >= 2][:8]
        if not words or limit <= 0:
            return []
        anchor = max(words, key=len).replace("'", "''")
        row_filter = f"SingleColumnValueFilter('m', 'title', =, 'substring:{anchor}', true, true) OR " \
                     f"SingleColumnValueFilter('m', 'description', =, 'substring:{anchor}', true, true)"

        def scan(conn: Connection) -> list[str]:
            scored: list[tuple[int, str]] = []
            rows = conn.table(PINS_TABLE).scan(columns=[b"m:title", b"m:description"],
                                              filter=row_filter, limit=max_scanned)
            for key, row in rows:
                haystack = (row.get(b"m:title", b"") + b" " + row.get(b"m:description", b"")).decode(
                    errors="replace").lower()
                scored.append((sum(word in haystack for word in words), key.decode()))
            scored.sort(key=lambda item: (-item[0], item[1]))
            return [pin_id for _, pin_id in scored[:limit]]

        return self._call("match_text", scan, 0)

    def ensure_tables(self) -> None:
        """Create our tables (pins, graph, writers) when missing; an existing one must have our
        families."""

        def ensure(conn: Connection) -> None:
            existing = {name.decode() for name in conn.tables()}
            for name, families in TABLE_FAMILIES.items():
                if name not in existing:
                    try:
                        conn.create_table(name, families)
                    except TException as exc:
                        # Another worker created it between our listing and our create.
                        if type(exc).__name__ != "AlreadyExists":
                            raise
                have = {family.decode().rstrip(":") for family in conn.table(name).families()}
                missing = sorted(set(families) - have)
                if missing:
                    raise ConfigError(f"HBase table {conn.table(name).name.decode()} lacks column "
                                      f"families {missing}; it predates this layout")

        self._call("ensure_tables", ensure, 0)

    # --- the boundary -------------------------------------------------------------------------

    def _call(self, op: str, work: Callable[[Connection], T], rows: int) -> T:
        started = time.perf_counter()
        try:
            with self.pool.connection() as conn:
                result = work(conn)
        except (TException, OSError) as exc:
            HBASE_ERRORS.labels(op, type(exc).__name__).inc()
            raise SinkError(f"HBase {op} failed: {describe(exc)}", dependency=DEPENDENCY,
                            retry_after=_retry_after(exc)) from exc
        except SinkError:
            HBASE_ERRORS.labels(op, "SinkError").inc()
            raise
        HBASE_SECONDS.labels(op).observe(time.perf_counter() - started)
        if rows:
            HBASE_ROWS.labels(op).inc(rows)
        return result


def hbase_pool(host: str, port: int, table_prefix: str, config: PoolConfig, *,
               timeout_s: float = 5.0) -> ConnectionPool[Connection]:
    """A pool of happybase connections with socket timeouts, so a dead server is an error, not a hang."""
    if not table_prefix:
        raise ConfigError("the HBase table prefix must not be empty")

    def connect() -> Connection:
        return happybase.Connection(host, port, timeout=int(timeout_s * 1000), table_prefix=table_prefix,
                                    autoconnect=True)

    return ConnectionPool(config, create=connect, close=lambda conn: conn.close(),
                          check=lambda conn: conn.tables())
