"""Property tests of the codec: hostile bytes only ever give a record or a ContractError, and every
valid record (generated from the contract itself) survives a round trip unchanged."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.campaigns.strategies import NAMED_RECORDS, mutation
from streams.codec import AvroCodec, Decoded
from streams.contracts import contracts
from streams.errors import ContractError
from streams.events import EVENT_TYPES, Event
from streams.registry import ConfluentRegistry

pytestmark = pytest.mark.timeout(300)

SINGLE_OBJECT = AvroCodec()
CONFLUENT = AvroCodec(registry=ConfluentRegistry(f"mock://fuzz-{uuid.uuid4()}"))

# Decoding a few hundred bytes takes microseconds; a second per example only trips on a real hang.
FUZZ = settings(max_examples=500, deadline=timedelta(seconds=1),
                suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=300, deadline=timedelta(seconds=1),
                      suppress_health_check=[HealthCheck.too_slow])


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
