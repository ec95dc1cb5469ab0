"""Graph deltas encoded straight from a batch's announcements: the same records, byte for byte, as
building each `GraphEdgeDelta` and encoding it, in both framings; and the codec's values encoder
that this rests on."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from processors.graph import GraphProcessor
from processors.graph_deltas import DELTA_FIELDS, Announcement, DeltaEncoder, delta_of
from processors.graph_state import Position
from streams.codec import AvroCodec
from streams.errors import ContractError
from streams.events import (
    EdgeType,
    GraphEdgeDelta,
    NodeType,
    uuid4_of_digest,
    uuid4_text_of_digest,
)
from streams.registry import ConfluentRegistry
from tests.unit.test_graph import CONFIG, MemoryStore, interaction, workload_events

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _announcements() -> list[Announcement]:
    events = workload_events(1500)
    positions = [Position("interactions:0", offset) for offset in range(len(events))]
    batch = GraphProcessor(MemoryStore(), CONFIG).apply(events, positions)
    # A session whose later member is co-engaged with an earlier one, then a hide that retracts
    # nothing but weighs negative: deltas dated before their cause, and negative weights.
    late = GraphProcessor(MemoryStore(), CONFIG).apply([
        interaction("u1", "p1", "click", T0.replace(minute=5)),
        interaction("u1", "p2", "save", T0, board="b1"),
        interaction("u1", "p1", "hide", T0.replace(minute=9)),
    ])
    return batch.announcements + late.announcements


@pytest.mark.parametrize("framing", ["single-object", "confluent"])
def test_encoded_announcements_are_the_records_of_their_deltas(framing: str) -> None:
    codec = AvroCodec() if framing == "single-object" else AvroCodec(
        registry=ConfluentRegistry(f"mock://deltas-{uuid.uuid4()}"))
    announcements = _announcements()
    deltas = [delta_of(a) for a in announcements]
    assert {d.edge_type for d in deltas} == {EdgeType.USER_PIN, EdgeType.PIN_BOARD, EdgeType.PIN_PIN}
    assert any(d.weight_delta < 0 for d in deltas)
    assert any(d.event_time != a.cause_time for d, a in zip(deltas, announcements, strict=True))

    records = DeltaEncoder(codec).records(announcements)

    assert records == [(d.src.encode(), codec.encode_event(d)) for d in deltas]
    assert [codec.decode_event(value) for _, value in records] == deltas


def test_a_naive_event_time_is_taken_as_utc_by_both_paths() -> None:
    codec = AvroCodec()
    naive = T0.replace(tzinfo=None, minute=7)
    batch = GraphProcessor(MemoryStore(), CONFIG).apply([interaction("u1", "p1", "save", naive)])
    [delta] = batch.deltas
    assert delta.event_time == naive.replace(tzinfo=UTC)
    assert DeltaEncoder(codec).records(batch.announcements) == [(b"u1", codec.encode_event(delta))]


def test_a_batch_announces_what_its_deltas_list() -> None:
    events = workload_events(300)
    batch = GraphProcessor(MemoryStore(), CONFIG).apply(events)
    assert len(batch.deltas) == len(batch.announcements) > 0
    assert [d.cause_event_id for d in batch.deltas] == [a.cause for a in batch.announcements]


def test_a_delta_id_in_text_is_the_text_of_the_uuid() -> None:
    for seed in range(200):
        digest = uuid.UUID(int=seed * 0x9E3779B97F4A7C15 % (1 << 128)).bytes
        made = uuid4_of_digest(digest)
        assert uuid4_text_of_digest(digest) == str(made)
        assert uuid.UUID(str(made)).version == 4
    with pytest.raises(ValueError):
        uuid4_text_of_digest(b"short")


# --- the codec's values encoder ---------------------------------------------------------------

def _values(**change: object) -> list[object]:
    values: dict[str, object] = {
        "event_id": str(uuid.uuid4()), "event_time": 1_772_366_400_000, "cause_event_id": uuid.uuid4(),
        "src": "p1", "src_type": NodeType.PIN, "dst": "b1", "dst_type": NodeType.BOARD,
        "edge_type": EdgeType.PIN_BOARD, "weight_delta": 1.5}
    values.update(change)
    return [values[name] for name in DELTA_FIELDS]


def test_the_values_encoder_gives_the_bytes_of_encode() -> None:
    codec = AvroCodec()
    encode = codec.values_encoder("GraphEdgeDelta", DELTA_FIELDS)
    values = _values()
    assert encode(values) == codec.encode("GraphEdgeDelta", dict(zip(DELTA_FIELDS, values, strict=True)))
    # An aware datetime and an int weight: what the generic path accepts, the same bytes.
    moment = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    loose = _values(event_time=moment, weight_delta=2)
    assert encode(loose) == codec.encode("GraphEdgeDelta", dict(zip(DELTA_FIELDS, loose, strict=True)))
    decoded = codec.decode_event(encode(loose))
    assert isinstance(decoded, GraphEdgeDelta) and decoded.event_time == moment


def test_the_values_encoder_refuses_what_breaks_the_contract() -> None:
    encode = AvroCodec().values_encoder("GraphEdgeDelta", DELTA_FIELDS)
    with pytest.raises(ContractError) as bad_enum:
        encode(_values(src_type="PLANET"))
    assert bad_enum.value.reason == "invalid_record"
    with pytest.raises(ContractError) as too_few:
        encode(_values()[:-1])
    assert too_few.value.reason == "invalid_record"


def test_the_values_encoder_names_a_field_order_that_is_not_the_contracts() -> None:
    codec = AvroCodec()
    swapped = (DELTA_FIELDS[1], DELTA_FIELDS[0], *DELTA_FIELDS[2:])
    with pytest.raises(ContractError, match="event_id, event_time, cause_event_id") as wrong:
        codec.values_encoder("GraphEdgeDelta", swapped)
    assert wrong.value.reason == "field_order"
    with pytest.raises(ContractError) as unknown:
        codec.values_encoder("NoSuchEvent", DELTA_FIELDS)
    assert unknown.value.reason == "unknown_contract"
