"""The compiled event readers give exactly the events of the generic decode (dict, then
`from_record`), and anything they do not take goes the generic way, errors included."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.avro_readers import Unreadable, compile_event_reader, parse_uuid, read_long
from streams.avro_writers import zigzag_varint
from streams.campaigns.strategies import RECORDS, mutation
from streams.codec import AvroCodec
from streams.contracts import contracts
from streams.errors import ContractError
from streams.events import (
    EVENT_TYPES,
    Event,
    FeedUpdated,
    InteractionAction,
    PinInteraction,
    uuid4_of_digest,
    uuid_of_int,
)

CODEC = AvroCodec()
READABLE = sorted(name for name in contracts().names() if name in EVENT_TYPES
                  and compile_event_reader(contracts().latest(name).raw, EVENT_TYPES[name]) is not None)
SAME_EVENTS = settings(max_examples=300, deadline=timedelta(seconds=1),
                       suppress_health_check=[HealthCheck.too_slow])


def _generic(data: bytes) -> Event:
    decoded = CODEC.decode(data)
    return EVENT_TYPES[decoded.name].from_record(decoded.record)


def test_the_hot_events_have_readers_and_self_building_ones_do_not() -> None:
    assert {"PinInteraction", "PinCreated", "GraphEdgeDelta", "Reconciliation"} <= set(READABLE)
    assert "FeedUpdated" not in READABLE  # it builds its items in its own from_record
    assert compile_event_reader(contracts().latest("FeedUpdated").raw, FeedUpdated) is None


@SAME_EVENTS
@given(st.sampled_from(READABLE).flatmap(lambda name: st.tuples(st.just(name), RECORDS[name])))
def test_compiled_reader_gives_the_generic_event(named: tuple[str, dict[str, Any]]) -> None:
    name, record = named
    data = CODEC.encode(name, record)
    reader = compile_event_reader(contracts().latest(name).raw, EVENT_TYPES[name])
    assert reader is not None
    event = reader(data, 10)  # the compiled reader itself: a valid body must not need the fallback
    assert event == _generic(data) == CODEC.decode_event(data)
    assert type(event) is EVENT_TYPES[name]


@SAME_EVENTS
@given(st.data())
def test_a_damaged_body_gets_the_generic_outcome(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(READABLE))
    body = bytearray(CODEC.encode(name, data.draw(RECORDS[name])))
    data.draw(mutation(len(body)))(body)
    try:
        expected: Event | str = _generic(bytes(body))
    except ContractError as error:
        expected = error.reason
    try:
        got: Event | str = CODEC.decode_event(bytes(body))
    except ContractError as error:
        got = error.reason
    assert got == expected


def test_enum_fields_are_members_and_ids_are_uuids() -> None:
    sent = PinInteraction(user_id="u", pin_id="p", action=InteractionAction.SAVE, session_id="s",
                          board_id="b")
    got = CODEC.decode_event(CODEC.encode_event(sent))
    assert got == sent and got.action is InteractionAction.SAVE and type(got.event_id) is uuid.UUID


def test_trailing_bytes_are_still_refused() -> None:
    data = CODEC.encode_event(PinInteraction(user_id="u", pin_id="p", action=InteractionAction.CLICK,
                                             session_id="s"))
    with pytest.raises(ContractError) as error:
        CODEC.decode_event(data + b"\x00")
    assert error.value.reason == "trailing_bytes"


@settings(max_examples=300)
@given(st.binary(min_size=16, max_size=16))
def test_fast_uuids_equal_the_library_ones(digest: bytes) -> None:
    made = uuid4_of_digest(digest)
    expected = uuid.UUID(bytes=digest, version=4)
    assert made == expected and hash(made) == hash(expected) and str(made) == str(expected)
    assert made.version == 4 and made.is_safe is expected.is_safe
    assert uuid_of_int(expected.int) == expected
    assert parse_uuid(str(expected)) == expected and parse_uuid(str(expected).upper()) == expected


@pytest.mark.parametrize("text", ["{12345678-1234-5678-1234-567812345678}",
                                  "12345678123456781234567812345678",
                                  "urn:uuid:12345678-1234-5678-1234-567812345678"])
def test_other_uuid_forms_are_read_as_the_library_reads_them(text: str) -> None:
    assert parse_uuid(text) == uuid.UUID(text)


@pytest.mark.parametrize("text", ["12345678-1234-5678-1234-56781234567g",
                                  "12345678-1234-5678-1234-5678123456",
                                  "not a uuid at all, thirty-six chars!"])
def test_malformed_uuids_raise_as_the_library_does(text: str) -> None:
    with pytest.raises(ValueError):
        uuid.UUID(text)
    with pytest.raises(ValueError):
        parse_uuid(text)


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_longs_read_back_as_written(value: int) -> None:
    data = zigzag_varint(value) + b"\x07"
    assert read_long(data, 0) == (value, len(data) - 1)


def test_an_overlong_or_truncated_varint_is_not_read() -> None:
    with pytest.raises(Unreadable):
        read_long(b"\xff" * 11 + b"\x01", 0)
    with pytest.raises(IndexError):
        read_long(b"\xff\xff", 0)


def test_a_read_event_is_the_constructed_one_in_every_field() -> None:
    event = PinInteraction(user_id="u" * 70, pin_id="p", action=InteractionAction.SAVE,
                           session_id="", board_id="b")  # a user id past the one-byte length
    reader = compile_event_reader(contracts().latest("PinInteraction").raw, PinInteraction)
    assert reader is not None
    read = reader(CODEC.encode_event(event), 10)  # the compiled reader itself, no fallback
    assert type(read) is PinInteraction
    assert {name: getattr(read, name) for name in PinInteraction.__dataclass_fields__} == \
        {name: getattr(event, name) for name in PinInteraction.__dataclass_fields__}
    assert read == event and hash(read) == hash(event)
    with pytest.raises(AttributeError):
        read.user_id = "x"  # type: ignore[misc]  # still frozen


@dataclass(frozen=True, slots=True, kw_only=True)
class _Checked(PinInteraction):
    def __post_init__(self) -> None:
        if not self.user_id:
            raise ValueError("a user id is required")


def test_a_class_that_checks_itself_is_built_through_its_constructor() -> None:
    reader = compile_event_reader(contracts().latest("PinInteraction").raw, _Checked)
    assert reader is not None
    body = CODEC.encode_event(PinInteraction(user_id="", pin_id="p", action=InteractionAction.CLICK,
                                             session_id="s"))
    with pytest.raises(ValueError, match="user id is required"):
        reader(body, 10)
    fine = CODEC.encode_event(PinInteraction(user_id="u", pin_id="p", action=InteractionAction.CLICK,
                                             session_id="s"))
    assert type(reader(fine, 10)) is _Checked
