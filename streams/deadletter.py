"""Dead letters: a record we cannot process goes to ops.deadletter.v1 as its original bytes, with
headers saying why and where it came from. Never silently dropped."""

from __future__ import annotations

from dataclasses import dataclass

from streams.producer import EventProducer
from streams.topics import (
    DEADLETTER,
    HEADER_DLQ_ERROR,
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE,
)

_MAX_ERROR_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class RawRecord:
    """An undecoded record as it was read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


def dead_letter_headers(record: RawRecord, reason: str, error: str) -> list[tuple[str, bytes]]:
    return [
        *record.headers,
        (HEADER_DLQ_REASON, reason.encode()),
        (HEADER_DLQ_ERROR, error[:_MAX_ERROR_CHARS].encode()),
        (HEADER_DLQ_SOURCE, record.source.encode()),
    ]


class DeadLetterWriter:
    """Publishes rejected records to the dead-letter topic through an EventProducer."""

    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer
        self.topic = producer.settings.topic(DEADLETTER.name)
        self.sent = 0

    def send(self, record: RawRecord, reason: str, error: str) -> None:
        self._producer.send_raw(self.topic, record.key, record.value,
                                headers=dead_letter_headers(record, reason, error),
                                context=record.source)
        self.sent += 1

    def flush(self, timeout: float = 30.0) -> int:
        return self._producer.flush(timeout)
