"""The embed stage's outbox on Kafka: embeddings, dead letters and reconciliations through one
producer, and `settle()` that returns only once all of them are acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from streams.deadletter import DeadLetterWriter, RawRecord
from streams.errors import DeliveryError
from streams.events import PinCreated, PinEmbedding, Stage
from streams.producer import EventProducer
from streams.topics import HEADER_SOURCE_TIMESTAMP, PINS_EMBEDDINGS

ReconcileFn = Callable[[Stage, PinCreated, str, Exception, RawRecord], None]
SETTLE_TIMEOUT_S = 60.0


class KafkaOutbox:
    """Implements `processors.embed.Outbox` with an EventProducer."""

    def __init__(self, producer: EventProducer, reconcile: ReconcileFn) -> None:
        self.producer = producer
        self.dead_letters = DeadLetterWriter(producer)
        self._reconcile = reconcile

    def embedding(self, event: PinEmbedding, source: RawRecord) -> None:
        headers = []
        if source.timestamp_ms is not None:
            headers.append((HEADER_SOURCE_TIMESTAMP, str(source.timestamp_ms).encode()))
        self.producer.send_event(PINS_EMBEDDINGS, event.pin_id, event, headers=headers,
                                 context=source.source)

    def dead_letter(self, record: RawRecord, reason: str, error: str) -> None:
        self.dead_letters.send(record, reason, error)

    def reconcile(self, stage: Stage, pin: PinCreated, dependency: str, error: Exception,
                  source: RawRecord) -> None:
        self._reconcile(stage, pin, dependency, error, source)

    async def settle(self) -> None:
        """Wait (off the event loop) until every queued record is acknowledged."""
        failed_before = self.producer.failed
        remaining = await asyncio.to_thread(self.producer.flush, SETTLE_TIMEOUT_S)
        if remaining or self.producer.failed > failed_before:
            # Not acknowledged: the batch must not be committed; the worker retries it.
            raise DeliveryError(
                f"{remaining} records unacknowledged, {self.producer.failed - failed_before} failed",
                topic="*", key=None, retriable=True)
