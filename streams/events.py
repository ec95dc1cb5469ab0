"""Typed, immutable events: one frozen dataclass per Avro contract, plus the consumed-record envelope.

Field names match the `.avsc` files one to one; `to_record()` gives the dict fastavro writes and
`from_record()` builds the event from the dict fastavro reads (tuples instead of lists, so an
event stays immutable).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, TypeVar


def utc_now() -> datetime:
    """Now, UTC, truncated to the millisecond (what timestamp-millis can carry)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_event_id() -> uuid.UUID:
    return uuid.uuid4()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_of_millis(value: int) -> datetime:
    """The UTC datetime `value` ms after the epoch: `_EPOCH + timedelta(milliseconds=value)` (what
    fastavro's timestamp-millis reader returns), in whole seconds and microseconds, without the
    float arithmetic of the keyword (called per event read and per delta)."""
    return _EPOCH + timedelta(0, value // 1000, value % 1000 * 1000)


_NEW = object.__new__
_SET = object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown
_VERSION_4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_VERSION_4_SET = (0x8000 << 48) | (4 << 76)


def uuid_of_int(value: int) -> uuid.UUID:
    """`uuid.UUID(int=value)` for a value known to be in range, without the argument checks of
    `UUID.__init__` (two thirds of its cost, and ids are made and read by the hundred thousand)."""
    made = _NEW(uuid.UUID)
    _SET(made, "int", value)
    _SET(made, "is_safe", _UNKNOWN_SAFETY)
    return made


def _uuid4_int(digest: bytes) -> int:
    """The int of `uuid.UUID(bytes=digest, version=4)`: variant and version bits set."""
    if len(digest) != 16:
        raise ValueError("a uuid takes 16 bytes")
    return int.from_bytes(digest) & _VERSION_4_CLEAR | _VERSION_4_SET


def uuid4_of_digest(digest: bytes) -> uuid.UUID:
    """`uuid.UUID(bytes=digest, version=4)` for a 16-byte digest."""
    return uuid_of_int(_uuid4_int(digest))


def uuid4_text_of_digest(digest: bytes) -> str:
    """`str(uuid4_of_digest(digest))` without the object in between."""
    h = f"{_uuid4_int(digest):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


_FIELD_SETS: dict[type, frozenset[str]] = {}


def _field_set(cls: type) -> frozenset[str]:
    names = _FIELD_SETS.get(cls)
    if names is None:
        names = _FIELD_SETS[cls] = frozenset(_field_names(cls))
    return names


def _shallow_record(obj: Any) -> dict[str, Any]:
    """Field name -> value of a dataclass instance. Not `dataclasses.asdict`: that deep-copies
    every value (each UUID, datetime and each of 1280 floats), which made encode_event several
    times slower than encode, and our values are immutable anyway."""
    return {name: getattr(obj, name) for name in _field_names(type(obj))}


class InteractionAction(StrEnum):
    UNKNOWN = "UNKNOWN"
    IMPRESSION = "IMPRESSION"
    CLICK = "CLICK"
    CLOSEUP = "CLOSEUP"
    SAVE = "SAVE"
    HIDE = "HIDE"


class NodeType(StrEnum):
    UNKNOWN = "UNKNOWN"
    USER = "USER"
    PIN = "PIN"
    BOARD = "BOARD"


class EdgeType(StrEnum):
    UNKNOWN = "UNKNOWN"
    USER_PIN = "USER_PIN"
    PIN_BOARD = "PIN_BOARD"
    PIN_PIN = "PIN_PIN"


class Fallback(StrEnum):
    UNKNOWN = "UNKNOWN"
    RANKER_TIMEOUT_CF = "RANKER_TIMEOUT_CF"
    CACHED_PREFERENCES = "CACHED_PREFERENCES"
    TRENDING_FILL = "TRENDING_FILL"
    UNCACHED = "UNCACHED"
    NO_EMBEDDINGS = "NO_EMBEDDINGS"


class Stage(StrEnum):
    UNKNOWN = "UNKNOWN"
    EMBED = "EMBED"
    PIN_STORE = "PIN_STORE"
    INDEX = "INDEX"
    GRAPH = "GRAPH"
    FEED = "FEED"


E = TypeVar("E", bound="Event")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every contract event: an id to deduplicate on and an event time (UTC)."""

    schema_name: ClassVar[str] = ""
    _enums: ClassVar[Mapping[str, type[StrEnum]]] = {}

    event_id: uuid.UUID = field(default_factory=new_event_id)
    event_time: datetime = field(default_factory=utc_now)

    def to_record(self) -> dict[str, Any]:
        """The dict that fastavro writes (enums as their symbols)."""
        return _shallow_record(self)

    @classmethod
    def from_record(cls: type[E], record: Mapping[str, Any]) -> E:
        """Build the event from a decoded Avro record; unknown extra fields are ignored."""
        names = _field_names(cls)
        if record.keys() <= _field_set(cls):
            kwargs = dict(record)  # the usual case: the reader schema is this class's contract
        else:
            kwargs = {name: record[name] for name in names if name in record}
        for name, value in kwargs.items():
            if type(value) is list:
                kwargs[name] = tuple(value)
        for name, enum_type in cls._enums.items():
            value = kwargs.get(name)
            if value is not None:
                kwargs[name] = enum_type(value)
        return cls(**kwargs)


@dataclass(frozen=True, slots=True, kw_only=True)
class PinCreated(Event):
    schema_name: ClassVar[str] = "PinCreated"

    pin_id: str
    user_id: str
    board_id: str
    title: str
    description: str
    link: str | None = None
    image_bytes: bytes | None = None
    image_ref: str | None = None
    image_url: str | None = None
    tags: tuple[str, ...] = ()

    def to_record(self) -> dict[str, Any]:
        record = _shallow_record(self)
        record["tags"] = list(self.tags)
        return record


@dataclass(frozen=True, slots=True, kw_only=True)
class PinInteraction(Event):
    schema_name: ClassVar[str] = "PinInteraction"
    _enums: ClassVar[Mapping[str, type[StrEnum]]] = {"action": InteractionAction}

    user_id: str
    pin_id: str
    action: InteractionAction
    session_id: str
    board_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PinEmbedding(Event):
    schema_name: ClassVar[str] = "PinEmbedding"

    pin_id: str
    source_event_id: uuid.UUID
    model_id: str
    model_version: str
    vector: tuple[float, ...]

    def to_record(self) -> dict[str, Any]:
        record = _shallow_record(self)
        record["vector"] = list(self.vector)
        return record


@dataclass(frozen=True, slots=True, kw_only=True)
class GraphEdgeDelta(Event):
    schema_name: ClassVar[str] = "GraphEdgeDelta"
    _enums: ClassVar[Mapping[str, type[StrEnum]]] = {
        "src_type": NodeType,
        "dst_type": NodeType,
        "edge_type": EdgeType,
    }

    cause_event_id: uuid.UUID
    src: str
    src_type: NodeType
    dst: str
    dst_type: NodeType
    edge_type: EdgeType
    weight_delta: float


@dataclass(frozen=True, slots=True)
class FeedItem:
    pin_id: str
    score: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedUpdated(Event):
    schema_name: ClassVar[str] = "FeedUpdated"

    user_id: str
    items: tuple[FeedItem, ...]
    model: str
    fallbacks: tuple[Fallback, ...] = ()

    def to_record(self) -> dict[str, Any]:
        record = _shallow_record(self)
        # Explicit keys: 200 items a feed, this was a fifth of encoding one.
        record["items"] = [{"pin_id": item.pin_id, "score": item.score, "reason": item.reason}
                           for item in self.items]
        record["fallbacks"] = [str(f) for f in self.fallbacks]
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FeedUpdated:
        return cls(
            event_id=record["event_id"],
            event_time=record["event_time"],
            user_id=record["user_id"],
            items=tuple(FeedItem(**item) for item in record["items"]),
            model=record["model"],
            fallbacks=tuple(Fallback(f) for f in record.get("fallbacks", ())),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconciliation(Event):
    schema_name: ClassVar[str] = "Reconciliation"
    _enums: ClassVar[Mapping[str, type[StrEnum]]] = {"stage": Stage}

    stage: Stage
    entity_type: str
    entity_id: str
    dependency: str
    error: str
    attempt: int = 1
    first_failed_at: datetime = field(default_factory=utc_now)
    cause_event_id: uuid.UUID | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    payload: bytes | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.schema_name: cls
    for cls in (PinCreated, PinInteraction, PinEmbedding, GraphEdgeDelta, FeedUpdated,
                Reconciliation)
}


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """One record read from Kafka: where it came from, and its decoded event."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    value: Event

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None
