"""The graph stage's announcements on graph.edges.v1: kept compact per batch, and encoded straight
from that form (the stage announces ~0.7 deltas per interaction, and building a `GraphEdgeDelta`
object per delta to encode it cost more than the encoding).

A delta's id derives from its cause and its edge, so a recomputation or a redelivery announces
the same ids and consumers deduplicate on them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from hashlib import blake2b
from typing import TYPE_CHECKING, NamedTuple

from sinks.hbase import millis
from streams.codec import AvroCodec
from streams.events import GraphEdgeDelta, datetime_of_millis, uuid4_of_digest, uuid4_text_of_digest

if TYPE_CHECKING:
    from processors.graph import Contribution

# GraphEdgeDelta's fields in its contract's order: what `DeltaEncoder` hands the codec.
DELTA_FIELDS = ("event_id", "event_time", "cause_event_id", "src", "src_type", "dst", "dst_type",
                "edge_type", "weight_delta")


class Announcement(NamedTuple):
    """One delta to publish: the edge contribution and the event that caused it."""

    cause: uuid.UUID
    cause_time: datetime
    contribution: Contribution


def _digest(cause: bytes, c: Contribution) -> bytes:
    edge = f"{c.row}|{c.column}|{c.at_ms}|{'+' if c.weight > 0 else '-'}".encode()
    return blake2b(cause + edge, digest_size=16).digest()


def delta_id(cause: uuid.UUID, c: Contribution) -> uuid.UUID:
    """A delta's id, derived from its cause and edge: a recomputation publishes the same ids."""
    return uuid4_of_digest(_digest(cause.bytes, c))


def delta_of(announcement: Announcement) -> GraphEdgeDelta:
    """The announcement as a contract event (its time: the cause's, or the edge's own when a
    co-engagement dates from an earlier member of the session)."""
    cause, cause_time, c = announcement
    if cause_time.tzinfo is None:  # the graph took it as UTC (`millis`): so does the delta
        cause_time = cause_time.replace(tzinfo=UTC)
    at = cause_time if c.at_ms == millis(cause_time) else datetime_of_millis(c.at_ms)
    return GraphEdgeDelta(event_id=delta_id(cause, c), event_time=at, cause_event_id=cause,
                          src=c.src, src_type=c.src_type, dst=c.dst, dst_type=c.dst_type,
                          edge_type=c.edge_type, weight_delta=c.weight)


class DeltaEncoder:
    """Announcements -> (key, value) records for graph.edges.v1: the bytes `delta_of` and
    `AvroCodec.encode_event` give, without the objects in between."""

    def __init__(self, codec: AvroCodec) -> None:
        self._encode = codec.values_encoder(GraphEdgeDelta.schema_name, DELTA_FIELDS)

    def records(self, announcements: Iterable[Announcement]) -> list[tuple[bytes, bytes]]:
        encode = self._encode
        out: list[tuple[bytes, bytes]] = []
        cause: uuid.UUID | None = None
        cause_bytes, cause_text = b"", ""
        for announced, _, c in announcements:
            if announced is not cause:  # an event's announcements come together
                cause, cause_bytes, cause_text = announced, announced.bytes, str(announced)
            event_id = uuid4_text_of_digest(_digest(cause_bytes, c))
            out.append((c.src.encode(), encode((event_id, c.at_ms, cause_text, c.src, c.src_type,
                                                c.dst, c.dst_type, c.edge_type, c.weight))))
        return out
