"""Schema evolution, one test per behaviour: what readers of one contract version see of data
written with another (through fastavro directly, our single-object codec and the registry path)."""

from __future__ import annotations

import copy
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streams.codec import AvroCodec
from streams.compat import can_read, check_full_transitive
from streams.contracts import ContractSet, contracts, load_contracts
from streams.errors import UnknownSchemaError
from streams.events import InteractionAction, PinCreated, PinInteraction
from streams.registry import ConfluentRegistry

PIN_CREATED_V1 = contracts().versions["PinCreated"][0]
PIN_CREATED_V2 = contracts().versions["PinCreated"][1]
INTERACTION_V1 = contracts().versions["PinInteraction"][0]


def _contract_set(root: Path, files: dict[str, dict[int, dict[str, Any]]]) -> ContractSet:
    """Write `{record: {version: schema}}` as `<record>/v<N>.avsc` under `root` and load it."""
    for record, versions in files.items():
        (root / record).mkdir(parents=True, exist_ok=True)
        for version, schema in versions.items():
            (root / record / f"v{version}.avsc").write_text(json.dumps(schema))
    return load_contracts(root)


def _interaction_with_new_symbol(symbol: str) -> dict[str, Any]:
    schema = copy.deepcopy(INTERACTION_V1.raw)
    action = next(f for f in schema["fields"] if f["name"] == "action")
    action["type"]["symbols"].append(symbol)
    return schema


def _fastavro_round_trip(record: dict[str, Any], writer: dict[str, Any], reader: dict[str, Any]) -> Any:
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(writer), record)
    buffer.seek(0)
    return schemaless_reader(buffer, parse_schema(writer), parse_schema(reader))


@pytest.fixture
def registry() -> ConfluentRegistry:
    return ConfluentRegistry(f"mock://evolution-{uuid.uuid4()}")


@pytest.fixture
def v1_only(tmp_path: Path) -> ContractSet:
    """An older deployment: it keeps PinCreated v1 (and the v1 interaction) only."""
    return _contract_set(tmp_path / "old", {"PinCreated": {1: PIN_CREATED_V1.raw},
                                            "PinInteraction": {1: INTERACTION_V1.raw}})


def _pin(**changes: Any) -> PinCreated:
    return PinCreated(pin_id="p1", user_id="u1", board_id="b1", title="t", description="d",
                      image_ref="blobs/p1.jpg", **changes)


# --- PinCreated v1 -> v2: tags added with a default ---------------------------------------------


def test_v1_pin_created_read_by_v2_reader_gets_empty_tags(v1_only: ContractSet) -> None:
    old_bytes = AvroCodec(v1_only).encode_event(_pin())
    decoded = AvroCodec().decode(old_bytes)
    assert decoded.writer_version == 1
    assert decoded.record["tags"] == []
    event = AvroCodec().decode_event(old_bytes)
    assert isinstance(event, PinCreated)
    assert event.tags == ()


def test_v1_pin_created_from_the_registry_read_by_v2_reader_gets_empty_tags(
    v1_only: ContractSet, registry: ConfluentRegistry
) -> None:
    old_bytes = AvroCodec(v1_only, registry=registry).encode_event(_pin())
    event = AvroCodec(registry=registry).decode_event(old_bytes)
    assert event == _pin(event_id=event.event_id, event_time=event.event_time)
    assert isinstance(event, PinCreated) and event.tags == ()


def test_v2_pin_created_read_with_v1_reader_schema_drops_tags() -> None:
    record = _pin(tags=("lake", "blue")).to_record()
    read = _fastavro_round_trip(record, PIN_CREATED_V2.raw, PIN_CREATED_V1.raw)
    assert "tags" not in read
    assert read == {k: v for k, v in record.items() if k != "tags"}


def test_v2_pin_created_from_the_registry_read_by_v1_only_reader_drops_tags(
    v1_only: ContractSet, registry: ConfluentRegistry
) -> None:
    new_bytes = AvroCodec(registry=registry).encode_event(_pin(tags=("lake",)))
    old_reader = AvroCodec(v1_only, registry=registry)
    assert "tags" not in old_reader.decode(new_bytes).record
    event = old_reader.decode_event(new_bytes)
    assert isinstance(event, PinCreated) and event.tags == ()


def test_single_object_bytes_of_a_version_the_reader_does_not_keep_are_an_unknown_fingerprint(
    v1_only: ContractSet,
) -> None:
    # Single-object framing names the writer by fingerprint only: an older reader needs the file.
    new_bytes = AvroCodec().encode_event(_pin(tags=("lake",)))
    with pytest.raises(UnknownSchemaError) as caught:
        AvroCodec(v1_only).decode(new_bytes)
    assert caught.value.reason == "unknown_fingerprint"


# --- enums: symbols added later ------------------------------------------------------------------


def test_enum_symbol_added_by_newer_writer_reads_as_enum_default() -> None:
    newer = _interaction_with_new_symbol("REPIN")
    record = PinInteraction(user_id="u1", pin_id="p1", action=InteractionAction.CLICK,
                            session_id="s1").to_record() | {"action": "REPIN"}
    assert _fastavro_round_trip(record, newer, INTERACTION_V1.raw)["action"] == "UNKNOWN"


def test_enum_symbol_added_by_newer_writer_reads_as_unknown_on_older_reader(
    tmp_path: Path, v1_only: ContractSet, registry: ConfluentRegistry
) -> None:
    newer = _contract_set(tmp_path / "new", {"PinInteraction": {1: INTERACTION_V1.raw,
                                                                2: _interaction_with_new_symbol("REPIN")}})
    record = PinInteraction(user_id="u1", pin_id="p1", action=InteractionAction.CLICK,
                            session_id="s1").to_record() | {"action": "REPIN"}
    new_bytes = AvroCodec(newer, registry=registry).encode("PinInteraction", record)
    old_reader = AvroCodec(v1_only, registry=registry)
    assert old_reader.decode(new_bytes).record["action"] == "UNKNOWN"
    event = old_reader.decode_event(new_bytes)
    assert isinstance(event, PinInteraction) and event.action is InteractionAction.UNKNOWN
    # A reader that keeps the newer version sees the new symbol itself.
    newer_codec = AvroCodec(newer)
    assert newer_codec.decode(newer_codec.encode("PinInteraction", record)).record["action"] == "REPIN"


def test_enum_symbol_added_is_compatible_both_ways_because_the_enum_has_a_default() -> None:
    assert check_full_transitive([("v1", INTERACTION_V1.raw),
                                  ("v2", _interaction_with_new_symbol("REPIN"))]) == []


# --- fields added without defaults ---------------------------------------------------------------


def test_new_field_without_default_is_flagged_by_compat() -> None:
    newer = copy.deepcopy(PIN_CREATED_V2.raw)
    newer["fields"].append({"name": "color", "type": "string", "doc": "Dominant colour."})
    problems = check_full_transitive([("v2", PIN_CREATED_V2.raw), ("v3", newer)])
    assert len(problems) == 1
    assert problems[0].startswith("backward v3 reads v2")
    assert "PinCreated.color" in problems[0] and "no default" in problems[0]


def test_new_field_with_default_is_not_flagged_by_compat() -> None:
    newer = copy.deepcopy(PIN_CREATED_V2.raw)
    newer["fields"].append({"name": "color", "type": ["null", "string"], "default": None, "doc": "."})
    assert check_full_transitive([("v2", PIN_CREATED_V2.raw), ("v3", newer)]) == []
    assert can_read(PIN_CREATED_V2.raw, newer) == []
