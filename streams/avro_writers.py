"""Avro body writers compiled from a record schema, for the hot encode paths (graph deltas,
interactions, reconciliations): the same bytes as fastavro's `schemaless_writer`, at about a third
of its cost for records of primitive, enum, uuid and timestamp fields.

A compiled writer accepts only the values whose encoding it knows exactly (see `_WRITERS`) and
raises `Unsupported` for anything else; the codec then encodes with fastavro, which gives the
same bytes or the contract error. Schemas with nested records, maps, fixed or wider unions are not
compiled (`compile_writer` returns None).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

Writer = Callable[[Any], bytes]
RecordWriter = Callable[[Mapping[str, Any]], bytes]
ValuesWriter = Callable[[Sequence[Any]], bytes]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_PACK_DOUBLE = struct.Struct("<d").pack
_PACK_FLOAT = struct.Struct("<f").pack
_SMALL = [bytes([n << 1]) for n in range(64)]  # the zigzag varints of 0..63: one byte each
_UUID_STRING = b"\x48"  # the zigzag length of a 36-character uuid string
_NULL_BRANCH, _VALUE_BRANCH = b"\x00", b"\x02"


class Unsupported(Exception):  # internal signal, never leaves the codec
    """A value this writer does not encode exactly: encode it with fastavro instead."""


def zigzag_varint(n: int) -> bytes:
    """Avro's long encoding: zigzag, then base-128 varint, low groups first."""
    if 0 <= n < 64:
        return _SMALL[n]
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise Unsupported(f"{n} is outside Avro's long range")
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _long(value: Any) -> bytes:
    if type(value) is not int:
        raise Unsupported("not an int")
    return zigzag_varint(value)


def _int(value: Any) -> bytes:
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        raise Unsupported("not a 32-bit int")
    return zigzag_varint(value)


def _double(value: Any) -> bytes:
    if type(value) is not float and type(value) is not int:
        raise Unsupported("not a number")
    return _PACK_DOUBLE(value)


def _float(value: Any) -> bytes:
    if type(value) is not float and type(value) is not int:
        raise Unsupported("not a number")
    return _PACK_FLOAT(value)


def _boolean(value: Any) -> bytes:
    if value is True:
        return b"\x01"
    if value is False:
        return b"\x00"
    raise Unsupported("not a bool")


def _string(value: Any) -> bytes:
    if not isinstance(value, str):  # StrEnum members are strings too
        raise Unsupported("not a str")
    data = value.encode()
    return zigzag_varint(len(data)) + data


def _bytes(value: Any) -> bytes:
    if type(value) is not bytes:
        raise Unsupported("not bytes")
    return zigzag_varint(len(value)) + value


def _null(value: Any) -> bytes:
    if value is not None:
        raise Unsupported("not None")
    return b""


def _uuid(value: Any) -> bytes:
    if type(value) is uuid.UUID:
        return _UUID_STRING + str(value).encode()
    return _string(value)  # fastavro writes a string as it is, valid uuid or not


def _timestamp_millis(value: Any) -> bytes:
    if type(value) is int:
        return zigzag_varint(value)
    if type(value) is datetime and value.tzinfo is not None:
        delta = value - _EPOCH  # fastavro's arithmetic: whole seconds, then truncated millis
        return zigzag_varint((delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000)
    raise Unsupported("not an int or an aware datetime")  # naive: fastavro uses local time


def _enum(symbols: list[str]) -> Writer:
    index = {symbol: zigzag_varint(i) for i, symbol in enumerate(symbols)}

    def write(value: Any) -> bytes:
        encoded = index.get(value) if isinstance(value, str) else None
        if encoded is None:
            raise Unsupported("not a symbol")
        return encoded

    return write


def _optional(inner: Writer, null_first: bool) -> Writer:
    null, some = (_NULL_BRANCH, _VALUE_BRANCH) if null_first else (_VALUE_BRANCH, _NULL_BRANCH)

    def write(value: Any) -> bytes:
        return null if value is None else some + inner(value)

    return write


def _array(items: Writer) -> Writer:
    """An array in one block: `items` writes all of its items."""

    def write(value: Any) -> bytes:
        if type(value) is not list and type(value) is not tuple:
            raise Unsupported("not a list")
        if not value:
            return b"\x00"
        return b"".join([zigzag_varint(len(value)), items(value), b"\x00"])

    return write


def _each(inner: Writer) -> Writer:
    return lambda value: b"".join(map(inner, value))


def _packed(code: str) -> Writer:
    """Floats or doubles (embedding vectors) in one struct call."""
    return lambda value: struct.pack(f"<{len(value)}{code}", *value)


_WRITERS: dict[str, Writer] = {
    "null": _null, "boolean": _boolean, "int": _int, "long": _long, "float": _float,
    "double": _double, "string": _string, "bytes": _bytes,
}
_LOGICAL: dict[tuple[str, str], Writer] = {
    ("string", "uuid"): _uuid, ("long", "timestamp-millis"): _timestamp_millis,
}


def _field_writer(schema: Any, enums: dict[str, list[str]], namespace: str) -> Writer | None:
    """The writer of one field's type, or None when this module does not compile it."""
    if isinstance(schema, str):
        if schema in _WRITERS:
            return _WRITERS[schema]
        symbols = enums.get(schema) or enums.get(f"{namespace}.{schema}")
        return None if symbols is None else _enum(symbols)
    if isinstance(schema, list):
        if len(schema) != 2 or "null" not in schema:
            return None
        other = schema[1] if schema[0] == "null" else schema[0]
        if other == "null":
            return None
        inner = _field_writer(other, enums, namespace)
        return None if inner is None else _optional(inner, schema[0] == "null")
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical is not None:
        return _LOGICAL.get((kind, logical))  # type: ignore[arg-type]
    if kind == "enum":
        symbols = list(schema["symbols"])
        enums[schema["name"]] = symbols
        enums[f"{schema.get('namespace', namespace)}.{schema['name']}"] = symbols
        return _enum(symbols)
    if kind == "array":
        if schema["items"] in ("float", "double"):
            return _array(_packed("f" if schema["items"] == "float" else "d"))
        items = _field_writer(schema["items"], enums, namespace)
        return None if items is None else _array(_each(items))
    if isinstance(kind, str) and kind in _WRITERS:
        return _WRITERS[kind]
    return None


def _compile_fields(schema: Mapping[str, Any]) -> list[tuple[str, Writer]] | None:
    """Each field's name and writer, in the schema's order; None when a type is not compiled."""
    if schema.get("type") != "record":
        return None
    namespace = schema.get("namespace", "")
    enums: dict[str, list[str]] = {}
    fields: list[tuple[str, Writer]] = []
    for field in schema["fields"]:
        writer = _field_writer(field["type"], enums, namespace)
        if writer is None:
            return None
        fields.append((field["name"], writer))
    return fields


def compile_writer(schema: Mapping[str, Any]) -> RecordWriter | None:
    """A writer of the record `schema` (its JSON as written), or None when it has a type this
    module does not compile. The writer takes a dict with every field and returns the Avro body;
    it raises (Unsupported, KeyError for a missing field, OverflowError, ...) for anything it does
    not encode exactly like fastavro: the caller then encodes with fastavro."""
    fields = _compile_fields(schema)
    if fields is None:
        return None

    def write(record: Mapping[str, Any]) -> bytes:
        return b"".join([writer(record[name]) for name, writer in fields])

    return write


def compile_values_writer(schema: Mapping[str, Any]) -> ValuesWriter | None:
    """Like `compile_writer`, for a caller that has the field values in the schema's order
    already: no dict is built per record (graph deltas are encoded by the thousand per batch)."""
    fields = _compile_fields(schema)
    if fields is None:
        return None
    writers = tuple(writer for _, writer in fields)

    def write(values: Sequence[Any]) -> bytes:
        # strict: as many values as fields, or ValueError (the caller then takes the generic path)
        return b"".join([writer(value) for writer, value in zip(writers, values, strict=True)])

    return write
