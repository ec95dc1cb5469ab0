"""Consumer SDK for downstream consumers: decoded, immutable events with explicit commit control.

Offsets are never committed behind the caller's back (`enable.auto.commit=false`): call
`commit(record)` once the record's side effects are done. A record that does not decode is handed
to `on_decode_error` (default: the dead-letter topic, with the reason) and iteration goes on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streams import metrics
from streams.codec import AvroCodec
from streams.deadletter import DeadLetterWriter, RawRecord
from streams.errors import ContractError, PinstreamError
from streams.events import ConsumedRecord
from streams.kafka_errors import usable
from streams.producer import EventProducer
from streams.registry import build_codec
from streams.settings import Settings

log = logging.getLogger(__name__)

DecodeErrorHandler = Callable[[RawRecord, ContractError], None]
_FETCH_BATCH = 500


def raw_record(msg: Message) -> RawRecord:
    """The undecoded view of a consumed (non-error) message."""
    ts_type, ts = msg.timestamp()
    listed = msg.headers()
    headers: tuple[tuple[str, bytes], ...] = ()
    if listed:
        pairs = list(listed.items()) if isinstance(listed, dict) else listed
        headers = tuple((k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in pairs)
    return RawRecord(
        topic=msg.topic() or "", partition=msg.partition() or 0, offset=msg.offset() or 0,
        key=msg.key(), value=msg.value(), headers=headers,
        timestamp_ms=ts if ts_type != 0 else None,
    )


def decode_record(codec: AvroCodec, raw: RawRecord) -> ConsumedRecord:
    """The decoded view of a raw record; a ContractError with its reason when it does not decode
    (a tombstone included): what the consumer hands to its dead-letter handler."""
    if raw.value is None:
        raise ContractError("tombstone (null value) on a contract topic", reason="null_value")
    event = codec.decode_event(raw.value)
    return ConsumedRecord(raw.topic, raw.partition, raw.offset, raw.timestamp_ms, raw.key,
                          raw.headers, event)


class EventConsumer:
    """Reads contract events from topics as `ConsumedRecord`s, committing only when told."""

    def __init__(self, settings: Settings, topics: Sequence[str], *, group_id: str,
                 codec: AvroCodec | None = None, from_beginning: bool = True,
                 on_decode_error: DecodeErrorHandler | None = None,
                 **kafka_overrides: object) -> None:
        self.settings = settings
        self.codec = codec or build_codec(settings)
        self.group_id = group_id
        self.topics = list(topics)
        self._from_beginning = from_beginning
        overrides: dict[str, object] = {"auto.offset.reset": "earliest" if from_beginning else "latest"}
        self._consumer = Consumer(settings.kafka_consumer(group_id, **(overrides | kafka_overrides)))
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._dlq_producer: EventProducer | None = None
        self._dlq: DeadLetterWriter | None = None
        self._on_decode_error = on_decode_error or self._dead_letter
        self.consumed = 0
        self.rejected = 0
        # Fetched in batches (one call into librdkafka per batch), handed out one by one.
        self._buffer: deque[Message] = deque()
        # Last offset handed to the caller per partition: what commit() without a record commits
        # (never the fetch position, which runs ahead of what the caller has seen).
        self._handed: dict[tuple[str, int], int] = {}
        self._consumed_metric: dict[str, Any] = {}

    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        log.debug("assigned %s", [(p.topic, p.partition) for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        # Buffered records of revoked partitions belong to their next owner now.
        revoked = {(p.topic, p.partition) for p in partitions}
        self._buffer = deque(m for m in self._buffer if (m.topic(), m.partition()) not in revoked)
        for key in revoked:
            self._handed.pop(key, None)

    def _dead_letter(self, record: RawRecord, error: ContractError) -> None:
        if self._dlq is None:
            self._dlq_producer = EventProducer(self.settings, codec=self.codec)
            self._dlq = DeadLetterWriter(self._dlq_producer)
        self._dlq.send(record, error.reason, str(error))
        log.warning("dead-lettered %s: %s", record.source, error)

    def poll(self, timeout: float = 1.0) -> ConsumedRecord | None:
        """The next decoded record, or None when nothing arrived within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            if not self._buffer:
                remaining = max(0.0, deadline - time.monotonic())
                self._buffer.extend(self._consumer.consume(_FETCH_BATCH, remaining))
            if not self._buffer:
                return None
            msg = self._buffer.popleft()
            if not usable(msg, consumer="consumer"):
                continue
            record = self._decode(msg)
            if record is not None:
                return record
            if time.monotonic() >= deadline:
                return None

    def _decode(self, msg: Message) -> ConsumedRecord | None:
        raw = raw_record(msg)
        try:
            record = decode_record(self.codec, raw)
        except ContractError as exc:
            self.rejected += 1
            metrics.DECODE_ERRORS.labels(raw.topic, exc.reason).inc()
            self._on_decode_error(raw, exc)
            self._handed[(raw.topic, raw.partition)] = raw.offset  # handled: dead-lettered
            return None
        self.consumed += 1
        counter = self._consumed_metric.get(raw.topic)
        if counter is None:
            counter = self._consumed_metric[raw.topic] = metrics.CONSUMED.labels(raw.topic)
        counter.inc()
        self._handed[(raw.topic, raw.partition)] = raw.offset
        return record

    def __iter__(self) -> Iterator[ConsumedRecord]:
        return self.iter()

    def iter(self, *, max_records: int | None = None,
             idle_timeout: float | None = None) -> Iterator[ConsumedRecord]:
        """Yield records; stop after `max_records`, or after `idle_timeout` s with nothing new."""
        count = 0
        idle_since = time.monotonic()
        while max_records is None or count < max_records:
            record = self.poll(0.5)
            if record is None:
                if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                    return
                continue
            idle_since = time.monotonic()
            count += 1
            yield record

    def commit(self, record: ConsumedRecord | RawRecord | None = None, *,
               asynchronous: bool = False) -> None:
        """Commit past `record` (its offset + 1), or past every record handed out so far."""
        if record is None:
            offsets = [KafkaTopicPartition(t, p, o + 1) for (t, p), o in self._handed.items()]
        else:
            offsets = [KafkaTopicPartition(record.topic, record.partition, record.offset + 1)]
        if not offsets:
            return
        if self._dlq_producer is not None and self._dlq_producer.flush(30.0):
            # A dead letter not yet acknowledged must not have its source committed past.
            raise PinstreamError("dead-letter records unacknowledged after 30 s; not committing")
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError._NO_OFFSET:
                return
            raise PinstreamError(f"commit failed for group {self.group_id}: {err.str()}") from exc

    def seek_to(self, position: str) -> None:
        """'beginning' or 'end' for every assigned partition."""
        offset = OFFSET_BEGINNING if position == "beginning" else OFFSET_END
        self._buffer.clear()
        for tp in self._consumer.assignment():
            self._consumer.seek(KafkaTopicPartition(tp.topic, tp.partition, offset))

    def close(self) -> None:
        """Leave the group (without committing anything not committed) and flush dead letters."""
        try:
            if self._dlq_producer is not None:
                self._dlq_producer.close()
        finally:
            self._consumer.close()

    def __enter__(self) -> EventConsumer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
