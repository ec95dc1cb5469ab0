"""Property tests of the codec: hostile bytes only ever give a record or a ContractError, and every
valid record (generated from the contract itself) survives a round trip unchanged."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.codec import AvroCodec, Decoded
from streams.contracts import contracts
from streams.errors import ContractError
from streams.events import EVENT_TYPES, Event
from streams.registry import ConfluentRegistry

pytestmark = pytest.mark.timeout(300)

CONTRACT_NAMES = contracts().names()
SINGLE_OBJECT = AvroCodec()
CONFLUENT = AvroCodec(registry=ConfluentRegistry(f"mock://fuzz-{uuid.uuid4()}"))

# Decoding a few hundred bytes takes microseconds; a second per example only trips on a real hang.
FUZZ = settings(max_examples=500, deadline=timedelta(seconds=1),
                suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=300, deadline=timedelta(seconds=1),
                      suppress_health_check=[HealthCheck.too_slow])


# --- strategies built from the .avsc files ------------------------------------------------------

_MILLIS_DATETIMES = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))

_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    # NaN is excluded only because NaN != NaN would fail the equality check, not the codec.
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "bytes": st.binary(max_size=64),
    "string": st.text(max_size=24),
}


def schema_strategy(schema: Any, named: dict[str, st.SearchStrategy[Any]] | None = None,
                    namespace: str = "") -> st.SearchStrategy[Any]:
    """Values valid for an Avro schema (the JSON form), in the shapes fastavro writes and reads."""
    named = {} if named is None else named
    if isinstance(schema, list):
        return st.one_of([schema_strategy(branch, named, namespace) for branch in schema])
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        return named[schema if "." in schema else f"{namespace}.{schema}".lstrip(".")]
    logical = schema.get("logicalType")
    if logical == "uuid":
        return st.uuids()
    if logical == "timestamp-millis":
        return _MILLIS_DATETIMES
    kind = schema["type"]
    if kind == "array":
        return st.lists(schema_strategy(schema["items"], named, namespace), max_size=8)
    if kind in ("enum", "record"):
        namespace = schema.get("namespace", namespace)
        full = f"{namespace}.{schema['name']}".lstrip(".")
        strategy: st.SearchStrategy[Any]
        if kind == "enum":
            strategy = st.sampled_from(schema["symbols"])
        else:
            strategy = st.fixed_dictionaries(
                {f["name"]: schema_strategy(f["type"], named, namespace) for f in schema["fields"]}
            )
        named[full] = strategy
        named[schema["name"]] = strategy
        return strategy
    return schema_strategy(kind, named, namespace)


RECORDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    name: schema_strategy(contracts().latest(name).raw) for name in CONTRACT_NAMES
}
NAMED_RECORDS = st.sampled_from(CONTRACT_NAMES).flatmap(
    lambda name: st.tuples(st.just(name), RECORDS[name])
)


# --- mutations -----------------------------------------------------------------------------------

Mutation = Callable[[bytearray], None]


@st.composite
def mutation(draw: st.DrawFn, size: int) -> Mutation:
    at = draw(st.integers(0, max(size, 1)))
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite", "delete"]))
    bit = draw(st.integers(0, 7))
    extra = draw(st.binary(min_size=1, max_size=8))

    def apply(data: bytearray) -> None:
        where = min(at, len(data))
        if kind == "flip" and where < len(data):
            data[where] ^= 1 << bit
        elif kind == "truncate":
            del data[where:]
        elif kind == "insert":
            data[where:where] = extra
        elif kind == "overwrite":
            data[where:where + len(extra)] = extra
        elif kind == "delete":
            del data[where:where + len(extra)]

    return apply


def _decode_or_contract_error(codec: AvroCodec, data: bytes) -> Decoded | None:
    """Decode and decode_event: the only allowed outcomes are a result or a ContractError."""
    try:
        decoded = codec.decode(data)
    except ContractError as error:
        assert error.reason, "every ContractError carries a reason"
        return None
    assert isinstance(decoded.record, dict)
    event = codec.decode_event(data)
    assert isinstance(event, Event)
    return decoded


# --- properties ----------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_raise_contract_error(data: bytes) -> None:
    _decode_or_contract_error(SINGLE_OBJECT, data)
    _decode_or_contract_error(CONFLUENT, data)


@FUZZ
@given(st.sampled_from(sorted(contracts().by_fingerprint)), st.binary(max_size=256))
def test_known_header_with_arbitrary_body_decodes_or_raises_contract_error(
    fingerprint: bytes, body: bytes
) -> None:
    _decode_or_contract_error(SINGLE_OBJECT, b"\xc3\x01" + fingerprint + body)


@FUZZ
@given(NAMED_RECORDS, st.data())
def test_mutated_single_object_encodings_decode_or_raise_contract_error(
    named_record: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    name, record = named_record
    encoded = bytearray(SINGLE_OBJECT.encode(name, record))
    for apply in data.draw(st.lists(mutation(len(encoded)), min_size=1, max_size=4)):
        apply(encoded)
    _decode_or_contract_error(SINGLE_OBJECT, bytes(encoded))


@FUZZ
@given(NAMED_RECORDS, st.data())
def test_mutated_confluent_encodings_decode_or_raise_contract_error(
    named_record: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    name, record = named_record
    encoded = bytearray(CONFLUENT.encode(name, record))
    for apply in data.draw(st.lists(mutation(len(encoded)), min_size=1, max_size=4)):
        apply(encoded)
    _decode_or_contract_error(CONFLUENT, bytes(encoded))


@ROUND_TRIP
@given(NAMED_RECORDS)
def test_generated_valid_records_round_trip_exactly(named_record: tuple[str, dict[str, Any]]) -> None:
    name, record = named_record
    for codec in (SINGLE_OBJECT, CONFLUENT):
        decoded = codec.decode(codec.encode(name, record))
        assert decoded.name == name
        assert decoded.record == record


@ROUND_TRIP
@given(NAMED_RECORDS)
def test_generated_valid_events_round_trip_exactly(named_record: tuple[str, dict[str, Any]]) -> None:
    name, record = named_record
    event = EVENT_TYPES[name].from_record(record)
    assert SINGLE_OBJECT.decode_event(SINGLE_OBJECT.encode_event(event)) == event
    assert event.to_record() == record
