"""Avro codec: encode/decode contract records with fastavro, framed for the wire.

Two framings, both always readable:
- Avro single-object encoding (default, no registry): 0xC3 0x01, the 8-byte CRC-64-AVRO
  fingerprint of the writer schema (little-endian), then the Avro body.
- Confluent framing (when a schema registry is configured): 0x00, the 4-byte big-endian schema
  id, then the Avro body. Subjects use the record-name strategy (`io.pinstream.events.PinCreated`).
Anything else raises a ContractError subclass whose `reason` goes into dead-letter headers.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import ValidationError as AvroValidationError
from fastavro.validation import validate

from streams.avro_readers import EventReader, compile_event_reader
from streams.avro_writers import RecordWriter, compile_values_writer, compile_writer
from streams.contracts import ContractSet, SchemaVersion, contracts
from streams.errors import ContractError, FramingError, UnknownSchemaError
from streams.events import EVENT_TYPES, Event

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0
_SINGLE_OBJECT_HEADER = 10
_CONFLUENT_HEADER = 5
_BYTES_LIKE = (bytes, bytearray, memoryview)


class SchemaRegistry(Protocol):
    """What the codec needs from a schema registry (confluent-kafka's client satisfies it)."""

    def register(self, subject: str, schema_json: str) -> int: ...

    def schema_by_id(self, schema_id: int) -> str: ...


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded value: which contract and writer version it was, and the record (reader view)."""

    name: str
    writer_version: int | None  # None when the writer schema came from a registry
    record: dict[str, Any]


class AvroCodec:
    """Encodes with the latest kept version of a contract and decodes any kept or registered one."""

    def __init__(self, contract_set: ContractSet | None = None,
                 registry: SchemaRegistry | None = None) -> None:
        self._contracts = contract_set or contracts()
        self._registry = registry
        self._latest = {name: self._contracts.latest(name) for name in self._contracts.names()}
        self._writers: dict[str, RecordWriter | None] = {
            name: compile_writer(version.raw) for name, version in self._latest.items()}
        self._headers: dict[str, bytes] = {}
        # Everything decoding needs per fingerprint, looked up once per message:
        # fingerprint -> (contract name, writer version, writer schema, reader schema or None).
        self._single_object_plans: dict[bytes, tuple[str, int, Any, Any]] = {
            fp: (v.name, v.version, v.parsed, None if latest is v else latest.parsed)
            for fp, v in self._contracts.by_fingerprint.items()
            if (latest := self._latest.get(v.name)) is not None
        }
        # fingerprint of a latest version -> its compiled event reader (the hot decode path)
        self._event_readers: dict[bytes, EventReader] = {
            version.fingerprint: reader for name, version in self._latest.items()
            if name in EVENT_TYPES
            and (reader := compile_event_reader(version.raw, EVENT_TYPES[name])) is not None
        }
        # registry id -> (contract name, writer schema, reader schema or None); filled on first sight
        self._registry_writers: dict[int, tuple[str, Any, Any]] = {}
        self._by_full_name = {v.full_name: v.name for v in self._latest.values()}

    @property
    def uses_registry(self) -> bool:
        return self._registry is not None

    # --- encoding -------------------------------------------------------------------------

    def _header(self, schema: SchemaVersion) -> bytes:
        header = self._headers.get(schema.name)
        if header is None:
            if self._registry is None:
                header = SINGLE_OBJECT_MAGIC + schema.fingerprint
            else:
                schema_id = self._registry.register(schema.full_name, json.dumps(schema.raw))
                header = struct.pack(">bI", CONFLUENT_MAGIC, schema_id)
            self._headers[schema.name] = header
        return header

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """Encode `record` as contract `name`; a record that breaks the contract raises
        ContractError(reason="invalid_record") naming the field, and nothing is returned."""
        schema = self._latest.get(name)
        if schema is None:
            raise UnknownSchemaError(f"no contract named {name!r}", reason="unknown_contract")
        header = self._header(schema)
        writer = self._writers.get(name)
        if writer is not None:
            try:
                return header + writer(record)
            except Exception:  # a value it does not know: fastavro decides below
                pass
        buffer = io.BytesIO()
        buffer.write(header)
        try:
            schemaless_writer(buffer, schema.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise ContractError(
                f"{name}: {_explain_invalid(schema, record, exc)}", reason="invalid_record"
            ) from exc
        return buffer.getvalue()

    def encode_event(self, event: Event) -> bytes:
        return self.encode(event.schema_name, event.to_record())

    def values_encoder(self, name: str, fields: Sequence[str]) -> Callable[[Sequence[Any]], bytes]:
        """An encoder of contract `name` that takes the field values in the order `fields` names
        them, for hot paths that have the values at hand (no event object, no dict per record).
        `fields` must be the contract's own fields in its order, or this raises ContractError
        (a contract that evolved needs its caller changed, not a silently shifted record). The
        encoder gives `encode`'s bytes, and `encode`'s ContractError for a value that breaks
        the contract."""
        schema = self._latest.get(name)
        if schema is None:
            raise UnknownSchemaError(f"no contract named {name!r}", reason="unknown_contract")
        names = tuple(field["name"] for field in schema.raw["fields"])
        if names != tuple(fields):
            raise ContractError(f"{name} v{schema.version} has the fields {', '.join(names)}, "
                                f"not {', '.join(fields)}: update the caller", reason="field_order")
        writer = compile_values_writer(schema.raw)

        def encode(values: Sequence[Any]) -> bytes:
            if writer is not None:
                try:
                    return self._header(schema) + writer(values)
                except Exception:  # a value it does not know: the generic path decides
                    pass
            if len(values) != len(names):
                raise ContractError(f"{name}: {len(values)} values for {len(names)} fields",
                                    reason="invalid_record")
            return self.encode(name, dict(zip(names, values, strict=True)))

        return encode

    # --- decoding -------------------------------------------------------------------------

    def decode(self, data: bytes) -> Decoded:
        """Decode framed bytes into the latest reader view of their contract."""
        if not isinstance(data, _BYTES_LIKE):
            raise FramingError(f"expected bytes, got {type(data).__name__}", reason="not_bytes")
        if data[:2] == SINGLE_OBJECT_MAGIC:
            return self._decode_single_object(data)
        if len(data) >= 1 and data[0] == CONFLUENT_MAGIC:
            return self._decode_confluent(data)
        if not data:
            raise FramingError("empty value", reason="empty")
        raise FramingError(
            f"unknown framing: first bytes {bytes(data[:2]).hex()} are neither single-object "
            "(c301) nor Confluent (00)",
            reason="bad_magic",
        )

    def decode_event(self, data: bytes) -> Event:
        if type(data) is bytes and data[:2] == SINGLE_OBJECT_MAGIC:
            reader = self._event_readers.get(data[2:_SINGLE_OBJECT_HEADER])
            if reader is not None:
                try:
                    return reader(data, _SINGLE_OBJECT_HEADER)
                except Exception:  # anything unusual: the generic path names it
                    pass
        decoded = self.decode(data)
        return EVENT_TYPES[decoded.name].from_record(decoded.record)

    def _decode_single_object(self, data: bytes) -> Decoded:
        if len(data) < _SINGLE_OBJECT_HEADER:
            raise FramingError("single-object header truncated", reason="truncated_header")
        fp = data[2:_SINGLE_OBJECT_HEADER]
        if type(fp) is not bytes:  # bytearray / memoryview slices: hashable bytes for the lookup
            fp = bytes(fp)
        plan = self._single_object_plans.get(fp)
        if plan is None:
            raise UnknownSchemaError(
                f"unknown schema fingerprint {fp.hex()}: written with a contract version this "
                "reader does not keep (upgrade pinstream or add the version to schemas/)",
                reason="unknown_fingerprint",
            )
        name, version, writer, reader = plan
        return Decoded(name, version, self._read_body(data, _SINGLE_OBJECT_HEADER, writer, reader, name))

    def _decode_confluent(self, data: bytes) -> Decoded:
        if len(data) < _CONFLUENT_HEADER:
            raise FramingError("Confluent header truncated", reason="truncated_header")
        (schema_id,) = struct.unpack(">I", bytes(data[1:_CONFLUENT_HEADER]))
        name, writer, reader = self._registry_writer(schema_id)
        return Decoded(name, None, self._read_body(data, _CONFLUENT_HEADER, writer, reader, name))

    def _registry_writer(self, schema_id: int) -> tuple[str, Any, Any]:
        cached = self._registry_writers.get(schema_id)
        if cached is not None:
            return cached
        if self._registry is None:
            raise UnknownSchemaError(
                f"Confluent-framed value (schema id {schema_id}) but no schema registry is "
                "configured: set PINSTREAM_SCHEMA_REGISTRY_URL",
                reason="registry_not_configured",
            )
        try:
            schema_json = self._registry.schema_by_id(schema_id)
        except Exception as exc:  # registry client errors vary by transport
            raise UnknownSchemaError(
                f"schema id {schema_id} not found in the registry: {exc}",
                reason="unknown_schema_id",
            ) from exc
        # Registry ids are global across subjects: the id may name a primitive, a foreign record,
        # or a non-Avro schema. Each of those is data for the dead-letter topic, not a crash.
        try:
            raw = json.loads(schema_json)
        except ValueError as exc:
            raise UnknownSchemaError(
                f"schema id {schema_id} is not an Avro JSON schema", reason="foreign_schema"
            ) from exc
        if not isinstance(raw, dict) or raw.get("type") != "record":
            raise UnknownSchemaError(
                f"schema id {schema_id} is not an Avro record schema", reason="foreign_schema"
            )
        full_name = f"{raw.get('namespace', '')}.{raw.get('name', '')}".lstrip(".")
        name = self._by_full_name.get(full_name)
        if name is None:
            raise UnknownSchemaError(
                f"schema id {schema_id} is {full_name!r}, not one of our contracts",
                reason="foreign_schema",
            )
        latest = self._latest[name]
        try:
            same_layout = to_parsing_canonical_form(raw) == latest.canonical
            parsed = latest.parsed if same_layout else parse_schema(raw, _force=True)
        except Exception as exc:  # fastavro's parse errors have no common base
            raise UnknownSchemaError(
                f"schema id {schema_id} ({full_name}) does not parse: {exc}", reason="foreign_schema"
            ) from exc
        # The same canonical form means the same bytes: read with our schema, no resolution step.
        entry = (name, parsed, None if same_layout else latest.parsed)
        self._registry_writers[schema_id] = entry
        return entry

    @staticmethod
    def _read_body(data: bytes, start: int, writer: Any, reader: Any, name: str) -> dict[str, Any]:
        buffer = io.BytesIO(data)
        buffer.seek(start)
        try:
            record = schemaless_reader(buffer, writer, reader)
        except EOFError as exc:
            raise ContractError(f"{name}: body truncated", reason="truncated_body") from exc
        except SchemaResolutionError as exc:
            raise ContractError(
                f"{name}: writer schema cannot be read as our contract: {exc}",
                reason="incompatible_schema",
            ) from exc
        except IndexError as exc:
            # fastavro's varint reader fails with IndexError, not EOFError, when the input ends
            # inside a number: having consumed every byte means the body was cut short.
            if buffer.tell() >= len(data):
                raise ContractError(f"{name}: body truncated", reason="truncated_body") from exc
            raise ContractError(f"{name}: body malformed: {exc}", reason="malformed_body") from exc
        except (ValueError, TypeError, KeyError, UnicodeDecodeError,
                OverflowError, MemoryError, struct.error) as exc:
            raise ContractError(f"{name}: body malformed: {exc}", reason="malformed_body") from exc
        if buffer.tell() != len(data):
            raise ContractError(
                f"{name}: {len(data) - buffer.tell()} trailing bytes after the record",
                reason="trailing_bytes",
            )
        if not isinstance(record, dict):
            raise ContractError(f"{name}: body is not a record", reason="malformed_body")
        return record


def _explain_invalid(schema: SchemaVersion, record: Any, exc: Exception) -> str:
    """A readable reason naming the offending field, from fastavro's validator."""
    if not isinstance(record, dict):
        return f"expected a record (dict), got {type(record).__name__}"
    try:
        validate(record, schema.parsed, raise_errors=True)
    except AvroValidationError as verr:
        return "; ".join(str(e) for e in verr.errors) or str(exc)
    except Exception:  # the validator itself chokes on some shapes; fall back to the writer's
        return str(exc)
    return str(exc)
