"""Event readers compiled from a record schema, for the hot decode paths (interactions, deltas): the
body is read field by field in plain Python (varints, length-prefixed strings) and the event built
directly (its slots filled in place of a keyword call of `__init__`), with the uuid, timestamp
and enum fields converted on the way. Under half the cost of the generic decode (fastavro's
reader, then `Event.from_record`): ~6 against ~16 us for an interaction on the benchmark VM.
Most of fastavro's work per call is set-up, and these bodies are about a hundred bytes.

Only for bodies written with the very schema we read with (no resolution), and only for records
of types this module knows (`_field_reader`). A reader raises on anything unusual (truncation,
an out-of-range enum or union index, an overlong varint, bad UTF-8, trailing bytes); the codec then
decodes the generic way, which gives the same event or names the error.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import fields as dataclass_fields
from datetime import datetime
from enum import StrEnum
from types import MemberDescriptorType
from typing import Any

from streams.events import Event, datetime_of_millis, uuid_of_int

EventReader = Callable[[bytes, int], Event]
FieldReader = Callable[[bytes, int], tuple[Any, int]]  # (data, position) -> (value, next position)

_MISSING = object()
_DOUBLE = struct.Struct("<d").unpack_from
_FLOAT = struct.Struct("<f").unpack_from


class Unreadable(Exception):  # internal signal, never leaves the codec
    """A body this reader does not take as it is: decode it the generic way instead."""


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """Avro's long (zigzag varint) at `pos`; raises on truncation and on more than 64 bits."""
    byte = data[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    value = byte & 0x7F
    shift = 7
    while True:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 63:
            raise Unreadable("varint longer than 10 bytes")
    if value >> 64:
        raise Unreadable("varint wider than 64 bits")
    return (value >> 1) ^ -(value & 1), pos + 1


def _read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    size, pos = read_long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise Unreadable("bytes run past the body")
    return data[pos:end], end


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    size = data[pos]
    if size < 0x80 and not size & 1:  # a length below 64 is one byte: most ids and names
        end = pos + 1 + (size >> 1)
        if end > len(data):
            raise Unreadable("string runs past the body")
        return data[pos + 1:end].decode(), end
    size, pos = read_long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise Unreadable("string runs past the body")
    return data[pos:end].decode(), end  # strict UTF-8: anything else goes the generic way


def _read_double(data: bytes, pos: int) -> tuple[float, int]:
    return _DOUBLE(data, pos)[0], pos + 8


def _read_float(data: bytes, pos: int) -> tuple[float, int]:
    return _FLOAT(data, pos)[0], pos + 4


def _read_boolean(data: bytes, pos: int) -> tuple[bool, int]:
    byte = data[pos]
    if byte > 1:
        raise Unreadable("boolean byte is neither 0 nor 1")
    return byte == 1, pos + 1


def parse_uuid(text: str) -> uuid.UUID:
    """`uuid.UUID(text)` for the canonical 36-character form, built without its argument checks
    (a third of the cost); any other form goes through `uuid.UUID` itself."""
    if len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-":
        digits = text.replace("-", "")
        if len(digits) == 32:
            return uuid_of_int(int(digits, 16))  # the very call (and errors) of uuid.UUID
    return uuid.UUID(text)


def _read_uuid(data: bytes, pos: int) -> tuple[uuid.UUID, int]:
    text, pos = _read_string(data, pos)
    return parse_uuid(text), pos


def _read_timestamp(data: bytes, pos: int) -> tuple[datetime, int]:
    millis, pos = read_long(data, pos)
    return datetime_of_millis(millis), pos


_PRIMITIVES: dict[str, FieldReader] = {
    "string": _read_string, "bytes": _read_bytes, "long": read_long, "int": read_long,
    "double": _read_double, "float": _read_float, "boolean": _read_boolean,
}


def _enum(symbols: list[str], enum_type: type[StrEnum] | None) -> FieldReader:
    members = {member.value: member for member in enum_type} if enum_type is not None else {}
    # A symbol the class lacks reads as _MISSING, and such a body goes the generic way.
    by_index: list[Any] = [members.get(symbol, _MISSING) if enum_type else symbol for symbol in symbols]
    count = len(by_index)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        index, pos = read_long(data, pos)
        if not 0 <= index < count or (value := by_index[index]) is _MISSING:
            raise Unreadable("enum index out of range, or a symbol the event class lacks")
        return value, pos

    return read


def _optional(inner: FieldReader, null_first: bool) -> FieldReader:
    null_index = 0 if null_first else 1

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        branch = data[pos]
        if branch == null_index << 1:
            return None, pos + 1
        if branch == (1 - null_index) << 1:
            return inner(data, pos + 1)
        raise Unreadable("union index out of range")

    return read


def _array(items: FieldReader) -> FieldReader:
    def read(data: bytes, pos: int) -> tuple[tuple[Any, ...], int]:
        out: list[Any] = []
        while True:
            count, pos = _block_count(data, pos)
            if count == 0:
                return tuple(out), pos  # events keep sequences as tuples
            for _ in range(count):
                item, pos = items(data, pos)
                out.append(item)

    return read


def _packed_array(code: str, size: int) -> FieldReader:
    """An array of floats or doubles (embedding vectors): each block in one `struct` call."""
    def read(data: bytes, pos: int) -> tuple[tuple[float, ...], int]:
        out: tuple[float, ...] = ()
        while True:
            count, pos = _block_count(data, pos)
            if count == 0:
                return out, pos
            out += struct.unpack_from(f"<{count}{code}", data, pos)  # struct.error when short
            pos += count * size

    return read


def _block_count(data: bytes, pos: int) -> tuple[int, int]:
    count, pos = read_long(data, pos)
    if count < 0:  # a block that gives its size in bytes too
        count = -count
        _, pos = read_long(data, pos)
    return count, pos


def _field_reader(schema: Any, enum_type: type[StrEnum] | None,
                  named: dict[str, list[str]]) -> FieldReader | None:
    """The reader of one field's type, or None when this module does not read it."""
    if isinstance(schema, list):
        if len(schema) != 2 or "null" not in schema:
            return None
        other = schema[1] if schema[0] == "null" else schema[0]
        inner = None if other == "null" else _field_reader(other, enum_type, named)
        return None if inner is None else _optional(inner, schema[0] == "null")
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        symbols = named.get(schema) or named.get(schema.rsplit(".", 1)[-1])
        return None if symbols is None else _enum(symbols, enum_type)  # an enum named earlier
    if not isinstance(schema, dict):
        return None
    kind, logical = schema.get("type"), schema.get("logicalType")
    if logical == "uuid" and kind == "string":
        return _read_uuid
    if logical == "timestamp-millis" and kind == "long":
        return _read_timestamp
    if logical is not None:
        return None
    if kind == "enum":
        named[schema["name"]] = list(schema["symbols"])
        return _enum(schema["symbols"], enum_type)
    if kind == "array":
        if schema["items"] in ("float", "double"):
            return _packed_array("f", 4) if schema["items"] == "float" else _packed_array("d", 8)
        items = _field_reader(schema["items"], None, named)
        return None if items is None else _array(items)
    if isinstance(kind, str) and kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    return None


def compile_event_reader(raw: Mapping[str, Any], event_type: type[Event]) -> EventReader | None:
    """A reader of bodies written with `raw` (the record schema's JSON) into `event_type`, or
    None when the schema has a field this module does not read, or fields the class lacks."""
    names = {field.name for field in dataclass_fields(event_type)}
    if raw.get("type") != "record" or {f["name"] for f in raw["fields"]} != names:
        return None
    if getattr(event_type.from_record, "__func__", None) is not Event.from_record.__func__:  # type: ignore[attr-defined]
        return None  # a class that builds itself its own way
    enums: Mapping[str, type[StrEnum]] = event_type._enums
    named: dict[str, list[str]] = {}
    readers: list[tuple[str, FieldReader]] = []
    for field in raw["fields"]:
        reader = _field_reader(field["type"], enums.get(field["name"]), named)
        if reader is None:
            return None
        readers.append((field["name"], reader))

    setters = _slot_setters(event_type, [name for name, _ in readers])
    if setters is None:
        def read(data: bytes, start: int) -> Event:
            values: dict[str, Any] = {}
            pos = start
            for name, reader in readers:
                values[name], pos = reader(data, pos)
            if pos != len(data):
                raise Unreadable("trailing bytes")
            return event_type(**values)

        return read

    steps = tuple(zip(setters, (reader for _, reader in readers), strict=True))
    new = object.__new__

    def read_into_slots(data: bytes, start: int) -> Event:
        event = new(event_type)
        pos = start
        for setter, reader in steps:
            value, pos = reader(data, pos)
            setter(event, value)
        if pos != len(data):
            raise Unreadable("trailing bytes")
        return event

    return read_into_slots


def _slot_setters(event_type: type[Event], names: list[str]) -> list[Callable[[Any, Any], None]] | None:
    """Each field's slot setter, when the class is a slotted dataclass that sets its fields as
    they come (no `__post_init__`): the event is then filled in place of calling `__init__`
    with keywords, a third of an interaction's decode. None for any other class."""
    if hasattr(event_type, "__post_init__"):
        return None
    setters = []
    for name in names:
        slot = next((vars(klass)[name] for klass in event_type.__mro__ if name in vars(klass)), None)
        if not isinstance(slot, MemberDescriptorType):
            return None
        setters.append(slot.__set__)
    return setters
