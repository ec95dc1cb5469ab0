"""Dead letters for operators: read ops.deadletter.v1 with filters, show one decoded, and redrive
letters to the topic they came from, each at most once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.codec import AvroCodec
from streams.errors import ContractError, InputError, PinstreamError
from streams.offsets import partitions_of, plain_consumer, watermarks
from streams.producer import EventProducer
from streams.settings import Settings
from streams.topics import (
    DEADLETTER,
    HEADER_DLQ_ERROR,
    HEADER_DLQ_REASON,
    HEADER_DLQ_REDRIVE_OF,
    HEADER_DLQ_SOURCE,
    HEADER_REPLAY_OF,
)

_POLL_S = 1.0
_DLQ_HEADERS = frozenset({HEADER_DLQ_REASON, HEADER_DLQ_ERROR, HEADER_DLQ_SOURCE})


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, with its reason headers parsed."""

    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def id(self) -> str:
        """How operators name a letter: "<partition>:<offset>"."""
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode(errors="replace")
        return None

    @property
    def reason(self) -> str:
        return self.header(HEADER_DLQ_REASON) or "unknown"

    @property
    def source(self) -> str | None:
        """"<topic>/<partition>/<offset>" of the record that was dead-lettered."""
        return self.header(HEADER_DLQ_SOURCE)

    @property
    def source_topic(self) -> str | None:
        source = self.source
        if not source or source.count("/") < 2:
            return None
        return source.rsplit("/", 2)[0]

    @property
    def time(self) -> datetime | None:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC) if self.timestamp_ms else None


@dataclass(frozen=True, slots=True)
class LetterFilter:
    reason: str | None = None  # exact reason
    source: str | None = None  # substring of the source topic
    since: datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.reason is not None and letter.reason != self.reason:
            return False
        if self.source is not None and self.source not in (letter.source_topic or ""):
            return False
        return self.since is None or (letter.time is not None and letter.time >= self.since)


def parse_letter_id(text: str) -> tuple[int, int]:
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise InputError(f"{text!r} is not a dead-letter id: use PARTITION:OFFSET as `pinstream dlq list` "
                         "prints it")
    return int(partition), int(offset)


def _letter(msg: Any) -> DeadLetter:
    ts_type, ts = msg.timestamp()
    listed = msg.headers() or []
    headers = tuple((k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in listed)
    return DeadLetter(msg.partition(), msg.offset(), ts if ts_type != 0 else None, msg.key(),
                      msg.value(), headers)


def read_topic(consumer: Consumer, topic: str, starts: dict[int, int]) -> Iterator[Any]:
    """Every message of `topic` from the given offsets per partition to the end as it is now."""
    ends = {p: watermarks(consumer, topic, p).high for p in starts}
    remaining = {p for p in starts if starts[p] < ends[p]}
    if not remaining:
        return
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in remaining])
    while remaining:
        messages = consumer.consume(500, _POLL_S)
        if not messages:
            # The last offsets may hold no record (compaction, transaction markers): done once
            # the position has reached the end.
            positions = consumer.position([TopicPartition(topic, p) for p in remaining])
            for tp in positions:
                if tp.partition is not None and (tp.offset or 0) >= ends[tp.partition]:
                    remaining.discard(tp.partition)
            continue
        for msg in messages:
            partition, offset = msg.partition(), msg.offset()
            if msg.error() is not None or partition is None or offset is None or partition not in remaining:
                continue
            yield msg
            if offset >= ends[partition] - 1:
                remaining.discard(partition)


def _starts(consumer: Consumer, topic: str, since: datetime | None) -> dict[int, int]:
    partitions = partitions_of(consumer, topic)
    if since is None:
        return {p: watermarks(consumer, topic, p).low for p in partitions}
    millis = int(since.timestamp() * 1000)
    found = consumer.offsets_for_times([TopicPartition(topic, p, millis) for p in partitions], timeout=30)
    return {tp.partition: tp.offset if tp.offset >= 0 else watermarks(consumer, topic, tp.partition).high
            for tp in found}


def read_dead_letters(settings: Settings, where: LetterFilter | None = None) -> Iterator[DeadLetter]:
    """Dead letters, oldest first per partition, that match `where`."""
    where = where or LetterFilter()
    topic = settings.topic(DEADLETTER.name)
    consumer = plain_consumer(settings, "dlq")
    try:
        for msg in read_topic(consumer, topic, _starts(consumer, topic, where.since)):
            letter = _letter(msg)
            if where.matches(letter):
                yield letter
    finally:
        consumer.close()


def find_letter(settings: Settings, letter_id: str) -> DeadLetter:
    partition, offset = parse_letter_id(letter_id)
    topic = settings.topic(DEADLETTER.name)
    consumer = plain_consumer(settings, "dlq")
    try:
        marks = watermarks(consumer, topic, partition)
        if not marks.low <= offset < marks.high:
            raise InputError(f"no dead letter {letter_id}: partition {partition} holds offsets "
                             f"[{marks.low}, {marks.high}); see `pinstream dlq list`")
        for msg in read_topic(consumer, topic, {partition: offset}):
            return _letter(msg)
    finally:
        consumer.close()
    raise PinstreamError(f"dead letter {letter_id} could not be read")


def decode_value(letter: DeadLetter, codec: AvroCodec) -> dict[str, Any] | None:
    """The letter's value as a contract event (a dict), or None when it does not decode."""
    if not letter.value:
        return None
    try:
        event = codec.decode_event(letter.value)
    except ContractError:
        return None
    record = {"schema": event.schema_name} | event.to_record()
    if "vector" in record:
        record["vector"] = f"<{len(record['vector'])} floats>"
    return record


@dataclass(frozen=True, slots=True)
class Redrive:
    """What redriving one letter does: publish to `target`, unless `refused` says why not."""

    letter: DeadLetter
    target: str | None
    refused: str | None = None


def plan_redrive(settings: Settings, letters: Iterable[DeadLetter]) -> list[Redrive]:
    """Each letter's target (the topic it came from: the reconciliation topic for the reconciler's
    letters), refused when it names no source or was redriven before (found by the
    `pinstream.dlq.redrive_of` header on the target topic since the letter was written)."""
    chosen = list(letters)
    dlq_topic = settings.topic(DEADLETTER.name)
    targets = {letter.source_topic for letter in chosen if letter.source_topic}
    since = min((letter.time for letter in chosen if letter.time), default=None)
    done: dict[str, str] = {}
    consumer = plain_consumer(settings, "dlq-redrive")
    try:
        for topic in sorted(targets):
            for msg in read_topic(consumer, topic, _starts(consumer, topic, since)):
                for key, value in msg.headers() or []:
                    if key == HEADER_DLQ_REDRIVE_OF and value:
                        done[value.decode()] = f"{topic}/{msg.partition()}/{msg.offset()}"
    finally:
        consumer.close()
    plans = []
    for letter in chosen:
        position = f"{dlq_topic}/{letter.partition}/{letter.offset}"
        if letter.source_topic is None:
            plans.append(Redrive(letter, None, "no source header: this letter cannot be redriven"))
        elif position in done:
            plans.append(Redrive(letter, letter.source_topic, f"already redriven as {done[position]}"))
        else:
            plans.append(Redrive(letter, letter.source_topic))
    return plans


def redrive_headers(letter: DeadLetter, dlq_topic: str) -> list[tuple[str, bytes]]:
    """The letter's original headers, plus where it was redriven from and (for idempotency by
    position downstream) the original record it stands for."""
    headers = [(k, v) for k, v in letter.headers if k not in _DLQ_HEADERS]
    headers.append((HEADER_DLQ_REDRIVE_OF, f"{dlq_topic}/{letter.partition}/{letter.offset}".encode()))
    if letter.source and not any(k == HEADER_REPLAY_OF for k, _ in headers):
        headers.append((HEADER_REPLAY_OF, letter.source.encode()))
    return headers


def execute_redrive(settings: Settings, plans: Iterable[Redrive]) -> int:
    """Publish every plan not refused; returns how many Kafka acknowledged (raises if any failed)."""
    dlq_topic = settings.topic(DEADLETTER.name)
    producer = EventProducer(settings)
    try:
        for plan in plans:
            if plan.refused is None and plan.target is not None:
                producer.send_raw(plan.target, plan.letter.key, plan.letter.value,
                                  headers=redrive_headers(plan.letter, dlq_topic), context=plan.letter.id)
    finally:
        producer.close()
    return producer.delivered
