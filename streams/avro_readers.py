"""Event readers compiled from a record schema, for the hot decode path (interactions): fastavro
reads the body with the schema's logical types left out, and the reader converts the uuid,
timestamp and enum fields itself and builds the event directly. About half the cost of decoding
to a dict and calling `Event.from_record`, for the same event.

Only for bodies written with the very schema we read with (no resolution), and only for records
of fields this module knows (`_convert`). A reader raises on anything unusual; the codec then
decodes the generic way, which gives the same event or names the error.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Mapping
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from fastavro import parse_schema, schemaless_reader

from streams.events import Event

EventReader = Callable[[bytes, int], Event]
Converter = Callable[[Any], Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Unreadable(Exception):  # internal signal, never leaves the codec
    """A body this reader does not take as it is: decode it the generic way instead."""


def _timestamp_millis(value: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=value)  # what fastavro's logical reader returns


def _optional(convert: Converter) -> Converter:
    def optional(value: Any) -> Any:
        return None if value is None else convert(value)

    return optional


def _members(enum_type: type[StrEnum]) -> Converter:
    members = {member.value: member for member in enum_type}

    def member(value: str) -> StrEnum:
        return members[value]  # a symbol the class lacks: KeyError, decoded the generic way

    return member


def _convert(schema: Any, enum_type: type[StrEnum] | None) -> tuple[Any, Converter | None] | None:
    """(the type without logical types, the converter of its values or None) for one field's
    type; None when this module does not read it."""
    if isinstance(schema, list):
        if len(schema) != 2 or "null" not in schema:
            return None
        other = schema[1] if schema[0] == "null" else schema[0]
        inner = _convert(other, enum_type)
        if inner is None:
            return None
        plain, convert = inner
        branches = ["null", plain] if schema[0] == "null" else [plain, "null"]
        return branches, None if convert is None else _optional(convert)
    if isinstance(schema, str):
        if enum_type is not None:
            return schema, _members(enum_type)  # a named enum defined by an earlier field
        return schema, None
    if not isinstance(schema, dict):
        return None
    logical = schema.get("logicalType")
    if logical == "uuid" and schema["type"] == "string":
        return "string", uuid.UUID
    if logical == "timestamp-millis" and schema["type"] == "long":
        return "long", _timestamp_millis
    if logical is not None:
        return None
    if schema["type"] == "enum":
        return schema, None if enum_type is None else _members(enum_type)
    if schema["type"] == "array" and isinstance(schema["items"], str):
        return schema, tuple  # events keep sequences as tuples
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
    plain_fields: list[dict[str, Any]] = []
    converters: list[tuple[str, Converter]] = []
    for field in raw["fields"]:
        known = _convert(field["type"], enums.get(field["name"]))
        if known is None:
            return None
        plain, convert = known
        plain_fields.append({"name": field["name"], "type": plain})
        if convert is not None:
            converters.append((field["name"], convert))
    schema = parse_schema({"type": "record", "name": raw["name"], "namespace": raw.get("namespace", ""),
                           "fields": plain_fields}, _force=True)

    def read(data: bytes, start: int) -> Event:
        buffer = io.BytesIO(data)
        buffer.seek(start)
        record = schemaless_reader(buffer, schema, None)
        if buffer.tell() != len(data) or not isinstance(record, dict):
            raise Unreadable("trailing bytes")
        for name, convert in converters:
            record[name] = convert(record[name])
        return event_type(**record)

    return read
