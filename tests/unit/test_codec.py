"""AvroCodec: round trips in both framings, header bytes per the Avro spec, and every error path."""

from __future__ import annotations

import io
import json
import struct
import uuid
from typing import Any

import pytest
from fastavro import schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from streams.codec import AvroCodec
from streams.contracts import _crc64_avro_fingerprint, contracts
from streams.errors import ContractError, FramingError, UnknownSchemaError
from streams.events import Event, InteractionAction, PinInteraction
from streams.registry import ConfluentRegistry

CONTRACT_NAMES = contracts().names()

# The Avro specification's reference algorithm for CRC-64-AVRO, written out independently so that
# our fingerprints are checked against the spec rather than against the library that made them.
_CRC64_EMPTY = 0xC15D213AA4D7A795


def _spec_crc64_avro(data: bytes) -> int:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.fixture
def registry() -> ConfluentRegistry:
    # A fresh in-process mock registry per test: ids never leak between tests.
    return ConfluentRegistry(f"mock://unit-{uuid.uuid4()}")


@pytest.fixture
def single_object_codec() -> AvroCodec:
    return AvroCodec()


@pytest.fixture
def registry_codec(registry: ConfluentRegistry) -> AvroCodec:
    return AvroCodec(registry=registry)


def _confluent(schema_id: int, body: bytes) -> bytes:
    return struct.pack(">bI", 0, schema_id) + body


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_single_object_round_trip_gives_back_the_same_event(
    name: str, one_event_per_contract: dict[str, Event], single_object_codec: AvroCodec
) -> None:
    event = one_event_per_contract[name]
    data = single_object_codec.encode_event(event)
    assert single_object_codec.decode_event(data) == event
    decoded = single_object_codec.decode(data)
    assert decoded.name == name
    assert decoded.writer_version == contracts().latest(name).version
    assert decoded.record == event.to_record()


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_confluent_round_trip_through_the_mock_registry_gives_back_the_same_event(
    name: str, one_event_per_contract: dict[str, Event], registry_codec: AvroCodec
) -> None:
    event = one_event_per_contract[name]
    data = registry_codec.encode_event(event)
    assert data[0] == 0
    assert registry_codec.decode_event(data) == event
    decoded = registry_codec.decode(data)
    assert (decoded.name, decoded.writer_version) == (name, None)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_codec_with_registry_also_reads_single_object_bytes(
    name: str, one_event_per_contract: dict[str, Event], registry_codec: AvroCodec
) -> None:
    event = one_event_per_contract[name]
    data = AvroCodec().encode_event(event)
    assert registry_codec.decode_event(data) == event


def test_confluent_bytes_from_one_codec_are_read_by_another_sharing_the_registry(
    one_event_per_contract: dict[str, Event], registry: ConfluentRegistry
) -> None:
    writer, reader = AvroCodec(registry=registry), AvroCodec(registry=registry)
    for event in one_event_per_contract.values():
        assert reader.decode_event(writer.encode_event(event)) == event


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda t: t.__name__)
def test_decode_accepts_any_bytes_like_value(
    wrap: Any, one_event_per_contract: dict[str, Event], single_object_codec: AvroCodec
) -> None:
    event = one_event_per_contract["PinInteraction"]
    data = single_object_codec.encode_event(event)
    assert single_object_codec.decode_event(wrap(data)) == event


def test_registered_writer_differing_only_in_docs_and_logical_types_reads_as_our_contract(
    one_event_per_contract: dict[str, Event], registry: ConfluentRegistry, registry_codec: AvroCodec
) -> None:
    # Another producer registered our layout without docs or logical types: same canonical form,
    # so the bytes are ours, and the reader still gets uuid and datetime values.
    event = one_event_per_contract["Reconciliation"]
    schema = contracts().latest("Reconciliation")
    bare = json.loads(schema.canonical)
    schema_id = registry.register(schema.full_name + "-bare", json.dumps(bare))
    data = _confluent(schema_id, AvroCodec().encode_event(event)[10:])
    assert registry_codec.decode_event(data) == event


# --- header bytes as the specifications say -----------------------------------------------------


def test_crc64_avro_of_the_null_schema_matches_the_spec_test_vector() -> None:
    canonical = to_parsing_canonical_form("null")
    assert canonical == '"null"'
    fingerprint = _crc64_avro_fingerprint(canonical)
    assert fingerprint == bytes.fromhex("8a8f25cce724dd63")
    assert int.from_bytes(fingerprint, "little") == 7195948357588979594
    assert _spec_crc64_avro(canonical.encode()) == 7195948357588979594


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_every_kept_version_fingerprint_is_crc64_avro_of_its_canonical_form(name: str) -> None:
    for version in contracts().versions[name]:
        expected = _spec_crc64_avro(version.canonical.encode("utf-8"))
        assert version.fingerprint == expected.to_bytes(8, "little")
        assert contracts().by_fingerprint[version.fingerprint] is version


def test_single_object_header_is_c3_01_then_little_endian_fingerprint_then_plain_avro_body(
    one_event_per_contract: dict[str, Event], single_object_codec: AvroCodec
) -> None:
    event = one_event_per_contract["PinInteraction"]
    schema = contracts().latest("PinInteraction")
    data = single_object_codec.encode_event(event)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == _spec_crc64_avro(schema.canonical.encode()).to_bytes(8, "little")
    body = io.BytesIO()
    schemaless_writer(body, schema.raw, event.to_record())
    assert data[10:] == body.getvalue()


def test_confluent_header_is_zero_then_big_endian_registry_id_then_the_same_body(
    one_event_per_contract: dict[str, Event], registry: ConfluentRegistry, registry_codec: AvroCodec
) -> None:
    event = one_event_per_contract["PinCreated"]
    schema = contracts().latest("PinCreated")
    data = registry_codec.encode_event(event)
    schema_id = registry.register(schema.full_name, json.dumps(schema.raw))  # idempotent: same id
    assert data[:5] == b"\x00" + schema_id.to_bytes(4, "big")
    assert data[5:] == AvroCodec().encode_event(event)[10:]


# --- decode errors: the right class and reason --------------------------------------------------


def _assert_contract_error(
    codec: AvroCodec, data: Any, error_class: type[ContractError], reason: str
) -> ContractError:
    with pytest.raises(error_class) as caught:
        codec.decode(data)
    assert caught.value.reason == reason
    return caught.value


@pytest.mark.parametrize(
    "data",
    [b"\x7b\x22json\x22: 1}", b"\xc3\x02" + bytes(20), b"\x01", b"\xff\xff\xff"],
    ids=["json", "wrong-single-object-version", "one-byte", "garbage"],
)
def test_bytes_in_neither_framing_are_a_framing_error(data: bytes, single_object_codec: AvroCodec) -> None:
    _assert_contract_error(single_object_codec, data, FramingError, "bad_magic")


@pytest.mark.parametrize("data", [b"\xc3\x01", b"\xc3\x01\x8a\x8f\x25"], ids=["magic-only", "partial-fp"])
def test_truncated_single_object_header_is_a_framing_error(
    data: bytes, single_object_codec: AvroCodec
) -> None:
    _assert_contract_error(single_object_codec, data, FramingError, "truncated_header")


@pytest.mark.parametrize("with_registry", [False, True], ids=["no-registry", "registry"])
def test_truncated_confluent_header_is_a_framing_error(
    with_registry: bool, registry_codec: AvroCodec, single_object_codec: AvroCodec
) -> None:
    codec = registry_codec if with_registry else single_object_codec
    _assert_contract_error(codec, b"\x00\x00\x00\x01", FramingError, "truncated_header")


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_every_truncation_of_the_body_is_reported_as_truncated(
    name: str, one_event_per_contract: dict[str, Event], single_object_codec: AvroCodec
) -> None:
    data = single_object_codec.encode_event(one_event_per_contract[name])
    for end in range(10, len(data)):
        error = _assert_contract_error(single_object_codec, data[:end], ContractError, "truncated_body")
        assert name in str(error)


def test_trailing_bytes_after_the_record_are_rejected(
    one_event_per_contract: dict[str, Event], single_object_codec: AvroCodec
) -> None:
    data = single_object_codec.encode_event(one_event_per_contract["PinInteraction"])
    error = _assert_contract_error(single_object_codec, data + b"\x00\x00", ContractError, "trailing_bytes")
    assert "2 trailing bytes" in str(error)


def test_malformed_body_is_a_contract_error(single_object_codec: AvroCodec) -> None:
    # event_id is a uuid string: a 3-character string cannot be one.
    schema = contracts().latest("PinInteraction")
    data = b"\xc3\x01" + schema.fingerprint + b"\x06abc" + bytes(20)
    _assert_contract_error(single_object_codec, data, ContractError, "malformed_body")


def test_unknown_fingerprint_is_an_unknown_schema_error(single_object_codec: AvroCodec) -> None:
    error = _assert_contract_error(
        single_object_codec, b"\xc3\x01" + bytes(8) + b"\x00", UnknownSchemaError, "unknown_fingerprint"
    )
    assert "0000000000000000" in str(error)


def test_unknown_registry_id_is_an_unknown_schema_error(registry_codec: AvroCodec) -> None:
    data = _confluent(987654, b"\x00")
    _assert_contract_error(registry_codec, data, UnknownSchemaError, "unknown_schema_id")


def test_confluent_bytes_without_a_registry_name_the_setting_to_fix(
    one_event_per_contract: dict[str, Event], registry_codec: AvroCodec, single_object_codec: AvroCodec
) -> None:
    data = registry_codec.encode_event(one_event_per_contract["PinInteraction"])
    error = _assert_contract_error(
        single_object_codec, data, UnknownSchemaError, "registry_not_configured"
    )
    assert "PINSTREAM_SCHEMA_REGISTRY_URL" in str(error)


def test_registry_id_of_a_record_that_is_not_ours_is_a_foreign_schema(
    registry: ConfluentRegistry, registry_codec: AvroCodec
) -> None:
    foreign = {"type": "record", "name": "Order", "namespace": "com.shop",
               "fields": [{"name": "id", "type": "string"}]}
    data = _confluent(registry.register("com.shop.Order", json.dumps(foreign)), b"\x02x")
    _assert_contract_error(registry_codec, data, UnknownSchemaError, "foreign_schema")


def test_registry_id_of_a_primitive_schema_is_a_foreign_schema(
    registry: ConfluentRegistry, registry_codec: AvroCodec
) -> None:
    data = _confluent(registry.register("some-topic-value", json.dumps("string")), b"\x02x")
    _assert_contract_error(registry_codec, data, UnknownSchemaError, "foreign_schema")


def test_registered_writer_schema_our_reader_cannot_resolve_is_a_contract_error(
    registry: ConfluentRegistry, registry_codec: AvroCodec
) -> None:
    # Same record name as ours, but user_id is an int: Avro resolution must fail, as data.
    clash = {"type": "record", "name": "PinInteraction", "namespace": "io.pinstream.events",
             "fields": [{"name": "user_id", "type": "int"}]}
    data = _confluent(registry.register("io.pinstream.events.PinInteraction", json.dumps(clash)), b"\x02")
    _assert_contract_error(registry_codec, data, ContractError, "incompatible_schema")


@pytest.mark.parametrize("data", [b"", bytearray()], ids=["bytes", "bytearray"])
def test_empty_value_is_a_framing_error(data: bytes, single_object_codec: AvroCodec) -> None:
    _assert_contract_error(single_object_codec, data, FramingError, "empty")


@pytest.mark.parametrize("value", [None, "c301", 0, [0xC3, 0x01]], ids=["none", "str", "int", "list"])
def test_non_bytes_value_is_a_framing_error(value: Any, single_object_codec: AvroCodec) -> None:
    error = _assert_contract_error(single_object_codec, value, FramingError, "not_bytes")
    assert type(value).__name__ in str(error)


# --- encode errors -------------------------------------------------------------------------------


def _interaction_record(**changes: Any) -> dict[str, Any]:
    record = PinInteraction(
        user_id="u1", pin_id="p1", action=InteractionAction.CLICK, session_id="s1"
    ).to_record()
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("field", "record"),
    [
        ("action", _interaction_record(action="LIKE")),
        ("session_id", _interaction_record(session_id=42)),
        ("user_id", _interaction_record(user_id=None)),
        ("event_time", _interaction_record(event_time="yesterday")),
        ("pin_id", {k: v for k, v in _interaction_record().items() if k != "pin_id"}),
    ],
    ids=["unknown-enum-symbol", "wrong-type", "null-in-non-union", "bad-timestamp", "missing-field"],
)
def test_invalid_record_raises_invalid_record_naming_the_field(
    field: str, record: dict[str, Any], single_object_codec: AvroCodec
) -> None:
    with pytest.raises(ContractError) as caught:
        single_object_codec.encode("PinInteraction", record)
    assert caught.value.reason == "invalid_record"
    assert f"PinInteraction.{field}" in str(caught.value)


def test_non_dict_record_raises_invalid_record(single_object_codec: AvroCodec) -> None:
    with pytest.raises(ContractError) as caught:
        single_object_codec.encode("PinInteraction", ["u1", "p1"])  # type: ignore[arg-type]
    assert caught.value.reason == "invalid_record"
    assert "list" in str(caught.value)


def test_failed_encode_leaves_the_codec_usable(single_object_codec: AvroCodec) -> None:
    with pytest.raises(ContractError):
        single_object_codec.encode("PinInteraction", _interaction_record(action="LIKE"))
    good = _interaction_record()
    assert single_object_codec.encode("PinInteraction", good) == AvroCodec().encode("PinInteraction", good)


def test_encoding_an_unknown_contract_is_an_unknown_schema_error(single_object_codec: AvroCodec) -> None:
    with pytest.raises(UnknownSchemaError) as caught:
        single_object_codec.encode("PinDeleted", {})
    assert caught.value.reason == "unknown_contract"
