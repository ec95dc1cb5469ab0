"""Reconciliation records: built from a sink or processing error and the source record, secrets
removed, original bytes kept, sent keyed by entity id to the reconciliation topic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from pydantic import SecretStr

from processors.reconcile_events import (
    MAX_ERROR_CHARS,
    ReconciliationEmitter,
    build_reconciliation,
    next_attempt,
    redact,
    settings_secrets,
)
from streams.codec import AvroCodec
from streams.errors import ProcessingError, SinkError
from streams.events import ConsumedRecord, Event, PinCreated, Reconciliation, Stage
from streams.metrics import REGISTRY
from streams.settings import Settings
from streams.topics import RECONCILIATION, TopicSpec


@dataclass
class FakeProducer:
    """Records what would have been produced (the EventSender interface of EventProducer)."""

    sent: list[tuple[TopicSpec, str, Event]] = field(default_factory=list)

    def send_event(self, spec: TopicSpec, key: str, event: Event, *,
                   headers: Sequence[tuple[str, bytes]] = (), context: object = None) -> None:
        self.sent.append((spec, key, event))


@pytest.fixture
def codec() -> AvroCodec:
    return AvroCodec()


@pytest.fixture
def pin() -> PinCreated:
    return PinCreated(pin_id="p42", user_id="u1", board_id="b1", title="t", description="d",
                      image_bytes=b"\x89PNG...")


def consumed(event: Event) -> ConsumedRecord:
    return ConsumedRecord(topic="pins.created.v1", partition=3, offset=1234, timestamp_ms=None,
                          key=b"p42", headers=(), value=event)


def test_a_sink_error_becomes_a_record_that_can_re_drive_the_event(codec: AvroCodec, pin: PinCreated) -> None:
    original = codec.encode_event(pin)
    error = SinkError("HBase write_pins failed: TTransportException: Connection refused",
                      dependency="hbase", retry_after=5.0)

    record = build_reconciliation(error, stage=Stage.PIN_STORE, entity_type="pin", entity_id="p42",
                                  payload=original, source=consumed(pin))

    assert (record.stage, record.entity_type, record.entity_id) == (Stage.PIN_STORE, "pin", "p42")
    assert record.dependency == "hbase" and record.attempt == 1
    assert record.error == "SinkError: HBase write_pins failed: TTransportException: Connection refused"
    assert record.cause_event_id == pin.event_id
    assert (record.source_topic, record.source_partition, record.source_offset) == (
        "pins.created.v1", 3, 1234)
    assert record.payload is not None and codec.decode_event(record.payload) == pin
    assert codec.decode_event(codec.encode_event(record)) == record  # fits the contract


def test_a_processing_error_names_its_stage_unless_told_the_dependency(pin: PinCreated) -> None:
    error = ProcessingError("inference timed out after 10s", stage="embed", reason="timeout")

    by_stage = build_reconciliation(error, stage=Stage.EMBED, entity_type="pin", entity_id="p42",
                                    payload=None)
    named = build_reconciliation(error, stage=Stage.EMBED, entity_type="pin", entity_id="p42",
                                 payload=None, dependency="model")

    assert by_stage.dependency == "embed" and named.dependency == "model"
    assert by_stage.cause_event_id is None and by_stage.source_topic is None


@pytest.mark.parametrize(("text", "leaked"), [
    ("connect to redis://default:hunter2secret@10.0.0.5:6379/0 failed", "hunter2secret"),
    ("sasl.password=s3cr3t-value rejected", "s3cr3t-value"),
    ('login failed: password="p@ss word"', "p@ss word"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
    ("api_key: AKIA1234567890, retry later", "AKIA1234567890"),
    ("GET /?token=abc123def&x=1 -> 401", "abc123def"),
])
def test_secret_looking_fragments_are_masked(text: str, leaked: str) -> None:
    cleaned = redact(text)
    assert leaked not in cleaned and "***" in cleaned


def test_known_secret_values_are_masked_wherever_they_appear() -> None:
    settings = Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                        sasl_username="svc", sasl_password=SecretStr("opensesame-42"))
    secrets = settings_secrets(settings)
    assert secrets == ("opensesame-42",)

    error = SinkError("broker said: bad credentials opensesame-42 for svc", dependency="kafka")
    record = build_reconciliation(error, stage=Stage.FEED, entity_type="user", entity_id="u1",
                                  payload=None, secrets=secrets)
    assert "opensesame-42" not in record.error and "svc" in record.error


def test_error_text_is_bounded() -> None:
    assert len(redact("x" * 100_000)) == MAX_ERROR_CHARS


def test_next_attempt_keeps_the_entity_payload_and_first_failure(pin: PinCreated) -> None:
    first = build_reconciliation(SinkError("down", dependency="hbase"), stage=Stage.PIN_STORE,
                                 entity_type="pin", entity_id="p42", payload=b"bytes",
                                 source=consumed(pin))
    second = next_attempt(first, SinkError("still down: token=zzz999", dependency="hbase"))

    assert second.attempt == 2 and second.event_id != first.event_id
    assert second.first_failed_at == first.first_failed_at
    assert (second.payload, second.entity_id, second.cause_event_id) == (b"bytes", "p42", pin.event_id)
    assert "zzz999" not in second.error and "still down" in second.error


def test_the_emitter_sends_to_the_reconciliation_topic_keyed_by_entity(pin: PinCreated) -> None:
    producer = FakeProducer()
    emitter = ReconciliationEmitter(producer, secrets=("hunter2secret",))
    labels = {"stage": "PIN_STORE", "dependency": "hbase"}
    before = REGISTRY.get_sample_value("pinstream_reconciliations_emitted_total", labels) or 0

    record = emitter.report(SinkError("auth hunter2secret refused", dependency="hbase"),
                            stage=Stage.PIN_STORE, entity_type="pin", entity_id="p42",
                            payload=b"original", source=consumed(pin))

    assert producer.sent == [(RECONCILIATION, "p42", record)]
    assert isinstance(record, Reconciliation) and "hunter2secret" not in record.error
    assert REGISTRY.get_sample_value("pinstream_reconciliations_emitted_total", labels) == before + 1
