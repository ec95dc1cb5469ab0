"""Reconciliation records for failed side effects: built from a SinkError or ProcessingError and the
source record, with secrets removed, and sent to ops.reconciliation.v1 keyed by entity id."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from prometheus_client import Counter
from pydantic import SecretStr

from streams.errors import ProcessingError, SinkError
from streams.events import ConsumedRecord, Event, Reconciliation, Stage, new_event_id, utc_now
from streams.metrics import REGISTRY
from streams.settings import Settings
from streams.topics import RECONCILIATION, TopicSpec

log = logging.getLogger(__name__)

RECONCILIATIONS_EMITTED = Counter(
    "pinstream_reconciliations_emitted_total",
    "Failed side effects handed to the reconciliation topic, by stage and dependency.",
    ["stage", "dependency"], registry=REGISTRY,
)

MAX_ERROR_CHARS = 2000
_MASK = "***"
# Secret-looking parts of library error texts: URL credentials, key=value pairs, auth schemes.
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {_MASK}"),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@"), rf"\1:{_MASK}@"),
    (re.compile(r"(?i)\b((?:sasl[._])?password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key"
                r"|authorization)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"), rf"\1\2{_MASK}"),
)
# Shorter known secrets would mask ordinary words.
_MIN_SECRET_CHARS = 4


class EventSender(Protocol):
    """What the emitter needs of a producer (EventProducer satisfies it)."""

    def send_event(self, spec: TopicSpec, key: str, event: Event, *,
                   headers: Sequence[tuple[str, bytes]] = (), context: object = None) -> None: ...


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with known secret values and secret-looking fragments masked, bounded in length."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET_CHARS:
            text = text.replace(secret, _MASK)
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def settings_secrets(settings: Settings) -> tuple[str, ...]:
    """Every secret value the settings hold, to be masked wherever an error text may echo it."""
    return tuple(value.get_secret_value() for name in type(settings).model_fields
                 if isinstance(value := getattr(settings, name), SecretStr) and value.get_secret_value())


def build_reconciliation(
    error: SinkError | ProcessingError, *, stage: Stage, entity_type: str, entity_id: str,
    payload: bytes | None, source: ConsumedRecord | None = None, dependency: str | None = None,
    attempt: int = 1, first_failed_at: datetime | None = None, secrets: Iterable[str] = (),
) -> Reconciliation:
    """The record asking the reconciler to re-drive one failed side effect.

    `payload` is the encoded event as consumed, so the reconciler can re-apply it unchanged;
    `dependency` defaults to the store a SinkError names, or the stage of a ProcessingError.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    if dependency is None:
        dependency = error.dependency if isinstance(error, SinkError) else error.stage
    return Reconciliation(
        stage=stage,
        entity_type=entity_type,
        entity_id=entity_id,
        dependency=dependency,
        error=redact(f"{type(error).__name__}: {error}", secrets),
        attempt=attempt,
        first_failed_at=first_failed_at or utc_now(),
        cause_event_id=source.value.event_id if source is not None else None,
        source_topic=source.topic if source is not None else None,
        source_partition=source.partition if source is not None else None,
        source_offset=source.offset if source is not None else None,
        payload=payload,
    )


def next_attempt(previous: Reconciliation, error: SinkError | ProcessingError, *,
                 secrets: Iterable[str] = ()) -> Reconciliation:
    """The record of a re-drive that failed again: same entity, payload and first failure."""
    return dataclasses.replace(
        previous, event_id=new_event_id(), event_time=utc_now(), attempt=previous.attempt + 1,
        error=redact(f"{type(error).__name__}: {error}", secrets),
    )


class ReconciliationEmitter:
    """Sends reconciliation records keyed by entity id, so one entity's records stay in order.

    A delivery failure surfaces from the producer (flush/close): the caller must not commit the
    source offset before it, or the failed side effect would be lost.
    """

    def __init__(self, producer: EventSender, *, secrets: Iterable[str] = ()) -> None:
        self._producer = producer
        self._secrets = tuple(secrets)

    def emit(self, record: Reconciliation, *, key: str | None = None) -> None:
        """Send `record` keyed by its entity id, or by `key`: records that must be re-driven in
        one order (a source partition's graph events) share a key, hence a partition."""
        self._producer.send_event(RECONCILIATION, key or record.entity_id, record)
        RECONCILIATIONS_EMITTED.labels(str(record.stage), record.dependency).inc()
        log.warning("reconciliation: %s %s %s failed (attempt %d, %s): %s", record.stage,
                    record.entity_type, record.entity_id, record.attempt, record.dependency,
                    record.error)

    def report(self, error: SinkError | ProcessingError, *, stage: Stage, entity_type: str,
               entity_id: str, payload: bytes | None, source: ConsumedRecord | None = None,
               dependency: str | None = None, key: str | None = None) -> Reconciliation:
        """Build the first-attempt record of `error` and emit it; returns what was sent."""
        record = build_reconciliation(error, stage=stage, entity_type=entity_type, entity_id=entity_id,
                                      payload=payload, source=source, dependency=dependency,
                                      secrets=self._secrets)
        self.emit(record, key=key)
        return record
