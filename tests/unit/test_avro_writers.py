"""The compiled Avro writers write exactly fastavro's bytes, and hand every value they do not know
to fastavro (through the codec), which then encodes it or names the broken field."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.avro_writers import Unsupported, compile_writer, zigzag_varint
from streams.campaigns.strategies import RECORDS
from streams.codec import AvroCodec
from streams.contracts import contracts
from streams.errors import ContractError
from streams.events import EdgeType, GraphEdgeDelta, NodeType

CODEC = AvroCodec()
COMPILED = {name: writer for name in contracts().names()
            if (writer := compile_writer(contracts().latest(name).raw)) is not None}
SAME_BYTES = settings(max_examples=300, deadline=timedelta(seconds=1),
                      suppress_health_check=[HealthCheck.too_slow])


def _fastavro(name: str, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, contracts().latest(name).parsed, record)
    return buffer.getvalue()


def test_the_hot_contracts_compile_and_nested_records_do_not() -> None:
    hot = {"GraphEdgeDelta", "PinInteraction", "PinCreated", "Reconciliation", "PinEmbedding"}
    assert hot <= set(COMPILED)
    assert "FeedUpdated" not in COMPILED  # an array of records: fastavro writes it


@SAME_BYTES
@given(st.sampled_from(sorted(COMPILED)).flatmap(lambda name: st.tuples(st.just(name), RECORDS[name])))
def test_compiled_writer_writes_fastavros_bytes(named: tuple[str, dict[str, Any]]) -> None:
    name, record = named
    assert COMPILED[name](record) == _fastavro(name, record)


@pytest.mark.parametrize("n", [0, 1, -1, 63, 64, -64, -65, 2**31, -(2**31), 2**63 - 1, -(2**63)])
def test_zigzag_varint_matches_fastavro_longs(n: int) -> None:
    schema = {"type": "record", "name": "L", "fields": [{"name": "n", "type": "long"}]}
    buffer = io.BytesIO()
    schemaless_writer(buffer, schema, {"n": n})
    assert zigzag_varint(n) == buffer.getvalue()


def test_values_outside_what_it_knows_are_refused_not_guessed() -> None:
    writer = COMPILED["GraphEdgeDelta"]
    good = GraphEdgeDelta(cause_event_id=uuid.uuid4(), src="p1", src_type=NodeType.PIN, dst="b1",
                          dst_type=NodeType.BOARD, edge_type=EdgeType.PIN_BOARD, weight_delta=1.0).to_record()
    for field, value in [("event_time", datetime(2026, 1, 1)),  # naive: fastavro uses local time
                         ("src_type", "TREE"), ("weight_delta", "1.0"), ("src", 5)]:
        with pytest.raises(Unsupported):
            writer({**good, field: value})
    with pytest.raises(KeyError):
        writer({k: v for k, v in good.items() if k != "dst"})
    with pytest.raises(OverflowError):
        COMPILED["PinEmbedding"]({**_embedding(), "vector": [1e300]})


def _embedding() -> dict[str, Any]:
    return {"event_id": uuid.uuid4(), "event_time": datetime(2026, 1, 1, tzinfo=UTC), "pin_id": "p",
            "source_event_id": uuid.uuid4(), "model_id": "m", "model_version": "1", "vector": [0.5, 1.0]}


@pytest.mark.parametrize("change", [
    {"event_time": 1_767_225_600_000},  # millis as an int
    {"event_id": "not-a-uuid-but-a-string"},  # fastavro writes any string
    {"weight_delta": 2},  # an int for a double
])
def test_codec_output_equals_fastavro_for_shapes_either_path_takes(change: dict[str, Any]) -> None:
    record = GraphEdgeDelta(cause_event_id=uuid.uuid4(), src="p1", src_type=NodeType.PIN, dst="p2",
                            dst_type=NodeType.PIN, edge_type=EdgeType.PIN_PIN, weight_delta=-1.0).to_record()
    record.update(change)
    header = CODEC.encode("GraphEdgeDelta", record)[:10]
    assert CODEC.encode("GraphEdgeDelta", record) == header + _fastavro("GraphEdgeDelta", record)


def test_a_refused_value_still_gets_fastavros_encoding_or_its_contract_error() -> None:
    record = GraphEdgeDelta(cause_event_id=uuid.uuid4(), src="p1", src_type=NodeType.PIN, dst="p2",
                            dst_type=NodeType.PIN, edge_type=EdgeType.PIN_PIN, weight_delta=1.0).to_record()
    naive = {**record, "event_time": datetime(2026, 1, 1, 12)}
    assert CODEC.encode("GraphEdgeDelta", naive)[10:] == _fastavro("GraphEdgeDelta", naive)
    with pytest.raises(ContractError) as error:
        CODEC.encode("GraphEdgeDelta", {**record, "src_type": "TREE"})
    assert error.value.reason == "invalid_record" and "src_type" in str(error.value)
