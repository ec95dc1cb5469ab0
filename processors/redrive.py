"""Re-drives of failed side effects, one per stage, each through the stage's own code: the embed
stage for EMBED and PIN_STORE, the graph processor for GRAPH, the feed service for FEED."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from processors.embed import PinEmbedStage
from processors.feed import FeedService
from processors.graph import GraphConfig, GraphEvent, GraphProcessor
from processors.graph_state import GraphRowStore, Position
from processors.reconcile import Outcome, Redriver
from sinks.hbase import PinRecord
from streams.codec import AvroCodec
from streams.deadletter import RawRecord
from streams.errors import ContractError, PinstreamError, ProcessingError, RedriveRefused, SinkError
from streams.events import (
    Event,
    FeedUpdated,
    InteractionAction,
    PinCreated,
    PinEmbedding,
    PinInteraction,
    Reconciliation,
    Stage,
)
from streams.topics import FEEDS_UPDATED, GRAPH_EDGES, TopicSpec


class EventSink(Protocol):
    """What the re-drives publish through (EventProducer satisfies it)."""

    def send_event(self, spec: TopicSpec, key: str, event: Event, *,
                   headers: Sequence[tuple[str, bytes]] = (), context: object = None) -> None: ...


def payload_event(record: Reconciliation, codec: AvroCodec, *kinds: type[Event]) -> Event:
    """The event a record carries as payload; RedriveRefused when there is none of `kinds`."""
    if not record.payload:
        raise RedriveRefused(f"{record.stage} record of {record.entity_id} has no payload",
                             stage=str(record.stage), reason="no_payload")
    try:
        event = codec.decode_event(record.payload)
    except ContractError as exc:
        raise RedriveRefused(f"payload of {record.entity_id}: {exc}", stage=str(record.stage),
                             reason="undecodable_payload") from exc
    if not isinstance(event, kinds):
        raise RedriveRefused(f"payload of {record.entity_id} is a {event.schema_name}",
                             stage=str(record.stage), reason="wrong_payload")
    return event


# --- EMBED and PIN_STORE: the embed stage, its failures captured instead of re-emitted ------------

@dataclass
class Captured:
    """A failure the embed stage reported while re-driving (it would have emitted a record)."""

    pin_id: str
    stage: Stage
    dependency: str
    error: Exception


@dataclass
class CapturingOutbox:
    """The embed stage's outbox for re-drives: embeddings and dead letters go to `inner` as usual;
    a reconciliation is captured, so the reconciler retries the record it is re-driving instead
    of emitting a second one."""

    inner: object  # processors.embed.Outbox (embedding, dead_letter, settle)
    captured: list[Captured] = field(default_factory=list)
    dead_lettered: set[bytes] = field(default_factory=set)  # keys of the records dead-lettered

    def clear(self) -> None:
        self.captured.clear()
        self.dead_lettered.clear()

    def embedding(self, event: PinEmbedding, source: RawRecord) -> None:
        self.inner.embedding(event, source)  # type: ignore[attr-defined]

    def dead_letter(self, record: RawRecord, reason: str, error: str) -> None:
        self.dead_lettered.add(record.key or b"")
        self.inner.dead_letter(record, reason, error)  # type: ignore[attr-defined]

    def reconcile(self, stage: Stage, pin: PinCreated, dependency: str, error: Exception,
                  source: RawRecord) -> None:
        self.captured.append(Captured(pin.pin_id, stage, dependency, error))

    async def settle(self) -> None:
        await self.inner.settle()  # type: ignore[attr-defined]


class PinRows(Protocol):
    def get_pins(self, pin_ids: Sequence[str], *, with_embedding: bool = True) -> dict[str, PinRecord]: ...


def complete(row: PinRecord | None, pin: PinCreated) -> bool:
    """Does the stored row already hold this pin (or a newer event of it) with its features?"""
    return (row is not None and row.event_time >= pin.event_time and row.embedding is not None
            and row.pending_embedding is None)


class PinRedriver:
    """EMBED and PIN_STORE: rewrite the pin row from the payload and embed the pin when its row
    lacks features, by running the embed stage on the original record. Idempotent: rows are
    stamped with the event time, the embeddings topic is compacted by pin id, and a row that
    already holds the pin with features is left alone."""

    def __init__(self, stage: Callable[[], Awaitable[tuple[PinEmbedStage, CapturingOutbox]]],
                 rows: Callable[[], PinRows], codec: AvroCodec) -> None:
        self._build_stage = stage
        self._rows = rows
        self.codec = codec
        self._stage: tuple[PinEmbedStage, CapturingOutbox] | None = None

    async def redrive(self, record: Reconciliation) -> Outcome:
        return single(await self.redrive_batch([record]))

    async def redrive_batch(self, records: Sequence[Reconciliation]) -> list[Outcome | PinstreamError]:
        """Pins of distinct ids in one pass of the embed stage (the model batches them)."""
        results: list[Outcome | PinstreamError] = []
        pins: dict[str, tuple[int, PinCreated]] = {}
        for index, record in enumerate(records):
            try:
                pin = payload_event(record, self.codec, PinCreated)
            except RedriveRefused as exc:
                results.append(exc)
                continue
            assert isinstance(pin, PinCreated)
            results.append(Outcome.DONE)
            pins[pin.pin_id] = (index, pin)
        stored = await asyncio.to_thread(self._rows().get_pins, list(pins))
        todo = []
        for pin_id, (index, pin) in pins.items():
            if complete(stored.get(pin_id), pin):
                results[index] = Outcome.ALREADY_APPLIED
            else:
                todo.append((index, records[index], pin))
        if not todo:
            return results
        if self._stage is None:  # the model loads on the first pin that needs it
            self._stage = await self._build_stage()
        stage, outbox = self._stage
        outbox.clear()
        await stage.process([source_record(record, pin) for _, record, pin in todo])
        failures = {c.pin_id: c for c in outbox.captured}
        for index, _, pin in todo:
            failure = failures.get(pin.pin_id)
            if failure is not None:
                results[index] = (failure.error if isinstance(failure.error, SinkError | ProcessingError)
                                  else ProcessingError(f"{failure.stage} failed: {failure.error}",
                                                       stage=str(failure.stage), reason="unexpected"))
            elif pin.pin_id.encode() in outbox.dead_lettered:
                results[index] = Outcome.DEAD_LETTERED  # a bad image: stored without features
        return results


def source_record(record: Reconciliation, pin: PinCreated) -> RawRecord:
    """The pin's original record, as the embed stage reads it (dead letters name its source)."""
    return RawRecord(topic=record.source_topic or "", partition=record.source_partition or 0,
                     offset=record.source_offset or 0, key=pin.pin_id.encode(), value=record.payload,
                     headers=(), timestamp_ms=None)


def single(results: Sequence[Outcome | PinstreamError]) -> Outcome:
    """The outcome of a batch of one, raising its error."""
    (result,) = results
    if isinstance(result, PinstreamError):
        raise result
    return result


# --- GRAPH: the graph processor on the event at its original position -------------------------

class GraphRedriver:
    """GRAPH: re-apply an interaction's (or a pin creation's) edges. Idempotent by the event's
    original position: a graph row records the last offset of each source partition it includes,
    so an event the row already has is skipped, never added twice. The processor is made afresh
    for each re-drive, so rows are read from HBase as they are now, never from a stale cache."""

    def __init__(self, store: GraphRowStore, config: GraphConfig, producer: EventSink,
                 codec: AvroCodec) -> None:
        self.store = store
        self.config = config
        self.producer = producer
        self.codec = codec

    async def redrive(self, record: Reconciliation) -> Outcome:
        return single(await self.redrive_batch([record]))

    async def redrive_batch(self, records: Sequence[Reconciliation]) -> list[Outcome | PinstreamError]:
        """The events in their order through one processor: rows read once, written once."""
        results: list[Outcome | PinstreamError] = []
        events: list[GraphEvent] = []
        positions: list[Position] = []
        applied: list[int] = []
        for record in records:
            try:
                event = payload_event(record, self.codec, PinInteraction, PinCreated)
                if record.source_topic is None or record.source_partition is None \
                        or record.source_offset is None:
                    raise RedriveRefused(f"GRAPH record of {record.entity_id} names no source position: "
                                         "re-applying it could double count", stage=str(record.stage),
                                         reason="no_source_position")
            except RedriveRefused as exc:
                results.append(exc)
                continue
            assert isinstance(event, PinInteraction | PinCreated)
            applied.append(len(results))
            results.append(Outcome.DONE)
            events.append(event)
            positions.append(Position(f"{record.source_topic}/{record.source_partition}",
                                      record.source_offset))
        if not events:
            return results
        processor = GraphProcessor(self.store, self.config)

        def apply() -> int:
            batch = processor.apply(events, positions)
            for delta in batch.deltas:  # same delta ids as the first try: consumers deduplicate
                self.producer.send_event(GRAPH_EDGES, delta.src, delta)
            return processor.flush()

        if not await asyncio.to_thread(apply):
            for index in applied:
                results[index] = Outcome.ALREADY_APPLIED
        return results


# --- FEED: recompute and rewrite the user's feed ---------------------------------------------

class FeedRows(Protocol):
    def remove_pin(self, user_id: str, pin_id: str) -> bool: ...


class FeedRedriver:
    """FEED: recompute the user's feed, replace it in Redis (and remove a hidden pin again when
    the record carries the hide) and publish FeedUpdated. Idempotent: a feed is replaced whole,
    and feeds.updated.v1 is compacted by user."""

    def __init__(self, feeds: FeedService, cache: FeedRows, producer: EventSink,
                 codec: AvroCodec) -> None:
        self.feeds = feeds
        self.cache = cache
        self.producer = producer
        self.codec = codec

    async def redrive(self, record: Reconciliation) -> Outcome:
        hide = None
        if record.payload:
            event = payload_event(record, self.codec, PinInteraction)
            assert isinstance(event, PinInteraction)
            hide = event if event.action is InteractionAction.HIDE else None
        user = record.entity_id

        def refresh() -> FeedUpdated:
            (result,) = self.feeds.refresh([user])
            if result.cache_error is not None:
                raise result.cache_error
            if hide is not None:
                self.cache.remove_pin(hide.user_id, hide.pin_id)
            return result.event()

        feed = await asyncio.to_thread(refresh)
        self.producer.send_event(FEEDS_UPDATED, user, feed)
        return Outcome.DONE


def redrivers(*, pins: PinRedriver, graph: GraphRedriver, feed: FeedRedriver) -> dict[Stage, Redriver]:
    """Stage -> re-drive. INDEX has none: the ANN index rebuilds itself from the embeddings topic,
    so an INDEX record is dead-lettered with reason `no_redriver` for an operator to look at."""
    return {Stage.EMBED: pins, Stage.PIN_STORE: pins, Stage.GRAPH: graph, Stage.FEED: feed}
