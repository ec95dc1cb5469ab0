"""The compiled event readers give exactly the events of the generic decode (dict, then
`from_record`), and anything they do not take goes the generic way, errors included."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.avro_readers import compile_event_reader
from streams.campaigns.strategies import RECORDS, mutation
from streams.codec import AvroCodec
from streams.contracts import contracts
from streams.errors import ContractError
from streams.events import EVENT_TYPES, Event, FeedUpdated, InteractionAction, PinInteraction

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
    event = CODEC.decode_event(data)
    assert event == _generic(data)
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
