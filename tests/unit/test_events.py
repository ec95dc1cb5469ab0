"""Typed events: immutable, hashable, and lossless through their Avro record form."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC

import pytest

from streams.contracts import contracts
from streams.events import (
    EVENT_TYPES,
    ConsumedRecord,
    Event,
    Fallback,
    FeedItem,
    FeedUpdated,
    InteractionAction,
    PinCreated,
    PinEmbedding,
    PinInteraction,
    utc_now,
)

CONTRACT_NAMES = contracts().names()


def test_there_is_one_event_type_per_contract() -> None:
    assert sorted(EVENT_TYPES) == CONTRACT_NAMES
    for name, event_type in EVENT_TYPES.items():
        assert event_type.schema_name == name


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_event_fields_match_the_latest_contract_fields(name: str) -> None:
    contract_fields = [f["name"] for f in contracts().latest(name).raw["fields"]]
    assert sorted(f.name for f in dataclasses.fields(EVENT_TYPES[name])) == sorted(contract_fields)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_events_are_frozen(name: str, one_event_per_contract: dict[str, Event]) -> None:
    event = one_event_per_contract[name]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.event_id = uuid.uuid4()  # type: ignore[misc]


def test_nested_values_and_envelope_are_frozen(one_event_per_contract: dict[str, Event]) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FeedItem("p1", 1.0, "trending").score = 2.0  # type: ignore[misc]
    record = ConsumedRecord("t", 0, 1, None, None, (), one_event_per_contract["PinInteraction"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.offset = 2  # type: ignore[misc]


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_events_are_hashable_so_they_can_be_deduplicated(
    name: str, one_event_per_contract: dict[str, Event]
) -> None:
    event = one_event_per_contract[name]
    assert len({event, dataclasses.replace(event)}) == 1


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_from_record_of_to_record_is_the_same_event(
    name: str, one_event_per_contract: dict[str, Event]
) -> None:
    event = one_event_per_contract[name]
    assert type(event).from_record(event.to_record()) == event


def test_to_record_gives_lists_and_plain_dicts_for_fastavro(one_event_per_contract: dict[str, Event]) -> None:
    pin = one_event_per_contract["PinCreated"].to_record()
    feed = one_event_per_contract["FeedUpdated"].to_record()
    embedding = one_event_per_contract["PinEmbedding"].to_record()
    assert pin["tags"] == ["nature", "water"]
    assert embedding["vector"] == [0.5, -0.25, 0.125, 0.0]
    assert feed["items"][0] == {"pin_id": "p1", "score": 0.9, "reason": "board:b1"}
    assert feed["fallbacks"] == ["TRENDING_FILL", "UNCACHED"]


def test_from_record_builds_tuples_not_lists() -> None:
    base = {"event_id": uuid.uuid4(), "event_time": utc_now()}
    pin = PinCreated.from_record(base | {"pin_id": "p", "user_id": "u", "board_id": "b", "title": "t",
                                         "description": "d", "tags": ["a", "b"]})
    embedding = PinEmbedding.from_record(base | {"pin_id": "p", "source_event_id": uuid.uuid4(),
                                                 "model_id": "m", "model_version": "1",
                                                 "vector": [1.0, 2.0]})
    feed = FeedUpdated.from_record(base | {"user_id": "u", "model": "m",
                                           "items": [{"pin_id": "p", "score": 1.0, "reason": "r"}],
                                           "fallbacks": ["UNCACHED"]})
    assert pin.tags == ("a", "b") and isinstance(pin.tags, tuple)
    assert embedding.vector == (1.0, 2.0) and isinstance(embedding.vector, tuple)
    assert isinstance(feed.items, tuple) and feed.items == (FeedItem("p", 1.0, "r"),)
    assert feed.fallbacks == (Fallback.UNCACHED,) and isinstance(feed.fallbacks, tuple)


def test_enum_symbols_become_enum_members() -> None:
    event = PinInteraction.from_record({"event_id": uuid.uuid4(), "event_time": utc_now(), "user_id": "u",
                                        "pin_id": "p", "action": "CLOSEUP", "session_id": "s"})
    assert event.action is InteractionAction.CLOSEUP


def test_from_record_ignores_fields_it_does_not_know() -> None:
    record = PinInteraction(user_id="u", pin_id="p", action=InteractionAction.HIDE,
                            session_id="s").to_record()
    assert PinInteraction.from_record(record | {"added_in_v9": 1}) == PinInteraction.from_record(record)


def test_feed_without_fallbacks_field_reads_as_no_fallbacks() -> None:
    feed = FeedUpdated.from_record({"event_id": uuid.uuid4(), "event_time": utc_now(), "user_id": "u",
                                    "model": "m", "items": []})
    assert feed.fallbacks == ()


def test_new_events_get_distinct_ids_and_a_utc_millisecond_time() -> None:
    first = PinInteraction(user_id="u", pin_id="p", action=InteractionAction.CLICK, session_id="s")
    second = PinInteraction(user_id="u", pin_id="p", action=InteractionAction.CLICK, session_id="s")
    assert first.event_id != second.event_id
    assert first.event_id.version == 4
    assert first.event_time.tzinfo is UTC
    assert first.event_time.microsecond % 1000 == 0


def test_consumed_record_header_returns_the_first_match_or_none(
    one_event_per_contract: dict[str, Event],
) -> None:
    record = ConsumedRecord(topic="pins.interactions.v1", partition=3, offset=42, timestamp_ms=1,
                            key=b"u1", headers=(("trace", b"a"), ("trace", b"b")),
                            value=one_event_per_contract["PinInteraction"])
    assert record.header("trace") == b"a"
    assert record.header("absent") is None
