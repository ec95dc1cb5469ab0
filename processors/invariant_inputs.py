"""Gathers what `processors.invariants` checks, for one namespace (topic prefix, HBase table
prefix, index folder): every record of the input, output and operations topics, the pin and
graph tables, the cached feeds, and the ANN index (worker /healthz, else its snapshot)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
from confluent_kafka import TopicPartition

from processors.graph import GraphConfig, GraphEvent, batch_recompute
from processors.index_catchup import snapshot_dir
from processors.invariants import PinFacts, UserFeedFacts, Verdict, check_feeds, check_graph, check_pins
from processors.invariants import verdict as make_verdict
from sinks.faiss_snapshot import SnapshotError, read_snapshot
from sinks.hbase import PinStore
from sinks.hbase_graph import NODE_PREFIXES, GraphStore
from sinks.redis import FeedCache
from streams.codec import AvroCodec
from streams.consumer import raw_record
from streams.deadletter import RawRecord
from streams.errors import ContractError, PinstreamError
from streams.events import (
    Event,
    FeedUpdated,
    NodeType,
    PinCreated,
    PinEmbedding,
    PinInteraction,
    Reconciliation,
    Stage,
)
from streams.offsets import partitions_of, plain_consumer, watermarks
from streams.registry import build_codec
from streams.settings import Settings
from streams.topics import (
    DEADLETTER,
    FEEDS_UPDATED,
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE,
    PINS_CREATED,
    PINS_EMBEDDINGS,
    PINS_INTERACTIONS,
    RECONCILIATION,
)

_STALL_S = 30.0
_PIN_BATCH = 1000


def read_to_end(settings: Settings, name: str) -> Iterator[RawRecord]:
    """Every record of catalogue topic `name` (namespaced) up to its end at the time of the call."""
    topic = settings.topic(name)
    consumer = plain_consumer(settings, "verify")
    try:
        ends = {}
        starts = []
        for partition in partitions_of(consumer, topic):
            marks = watermarks(consumer, topic, partition)
            if marks.high > marks.low:
                ends[partition] = marks.high
                starts.append(TopicPartition(topic, partition, marks.low))
        if starts:
            consumer.assign(starts)
        last_read = time.monotonic()
        while ends:
            batch = consumer.consume(500, 0.5)
            if not batch:
                # Compaction and transaction markers leave gaps: a position past the end retires.
                for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                    if tp.offset >= ends.get(tp.partition, tp.offset + 1):
                        del ends[tp.partition]
                if ends and time.monotonic() - last_read > _STALL_S:
                    raise PinstreamError(f"reading {topic} stalled with partitions {sorted(ends)} "
                                         "unfinished; is Kafka up?")
                continue
            last_read = time.monotonic()
            for msg in batch:
                if msg.error() is not None:
                    continue
                record = raw_record(msg)
                end = ends.get(record.partition)
                if end is None or record.offset >= end:
                    continue
                yield record
                if record.offset + 1 >= end:
                    del ends[record.partition]
    finally:
        consumer.close()


def _events(settings: Settings, name: str, codec: AvroCodec) -> Iterator[tuple[RawRecord, Event]]:
    """Decoded events of a topic; undecodable records are skipped (the worker dead-letters them)."""
    for record in read_to_end(settings, name):
        if record.value is None:
            continue
        try:
            yield record, codec.decode_event(record.value)
        except ContractError:
            continue


@dataclass
class TopicFacts:
    """Everything the checks need from the topics, read once."""

    graph_events: list[GraphEvent] = field(default_factory=list)
    pins: PinFacts = field(default_factory=PinFacts)
    last_interaction_ms: dict[str, int] = field(default_factory=dict)
    last_feed: dict[str, tuple[int, frozenset[str]]] = field(default_factory=dict)
    embedding_positions: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    reconciling_users: set[str] = field(default_factory=set)
    graph_reconciliations: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)


def read_topics(settings: Settings, codec: AvroCodec) -> TopicFacts:
    facts = TopicFacts()
    for _, event in _events(settings, PINS_CREATED.name, codec):
        if isinstance(event, PinCreated):
            facts.pins.created.add(event.pin_id)
            facts.graph_events.append(event)
    for record, event in _events(settings, PINS_INTERACTIONS.name, codec):
        if isinstance(event, PinInteraction):
            facts.graph_events.append(event)
            stamp = record.timestamp_ms or 0
            facts.last_interaction_ms[event.user_id] = max(
                stamp, facts.last_interaction_ms.get(event.user_id, 0))
    for record, event in _events(settings, PINS_EMBEDDINGS.name, codec):
        if isinstance(event, PinEmbedding):
            facts.pins.embedded.add(event.pin_id)
            facts.embedding_positions[event.pin_id] = (event.model_version, record.partition,
                                                       record.offset)
    for record, event in _events(settings, FEEDS_UPDATED.name, codec):
        if isinstance(event, FeedUpdated):
            stamp = record.timestamp_ms or 0
            if stamp >= facts.last_feed.get(event.user_id, (-1, frozenset()))[0]:
                facts.last_feed[event.user_id] = (stamp, frozenset(i.pin_id for i in event.items))
    for _, event in _events(settings, RECONCILIATION.name, codec):
        if isinstance(event, Reconciliation):
            _note_reconciliation(event, facts)
    created_topic = settings.topic(PINS_CREATED.name)
    reconciliation_topic = settings.topic(RECONCILIATION.name)
    for record in read_to_end(settings, DEADLETTER.name):
        headers = dict(record.headers)
        reason = headers.get(HEADER_DLQ_REASON, b"unknown").decode(errors="replace")
        source = headers.get(HEADER_DLQ_SOURCE, b"").decode(errors="replace")
        origin = source.rsplit("/", 2)[0] if source.count("/") >= 2 else "unknown"
        label = f"{origin.removeprefix(settings.topic_prefix)}:{reason}"
        facts.dead_letter_reasons[label] = facts.dead_letter_reasons.get(label, 0) + 1
        if origin == created_topic and record.key is not None:
            facts.pins.dead_lettered[record.key.decode(errors="replace")] = reason
        elif origin == reconciliation_topic:
            _note_exhausted(record, reason, codec, facts)
    return facts


def _note_exhausted(record: RawRecord, reason: str, codec: AvroCodec, facts: TopicFacts) -> None:
    """A reconciler's dead letter (its value is the last Reconciliation): the entity now sits in
    the dead-letter topic with a reason."""
    try:
        event = codec.decode_event(record.value or b"")
    except ContractError:
        return
    if isinstance(event, Reconciliation):
        if event.entity_type == "pin":
            facts.pins.dead_lettered[event.entity_id] = reason
        elif event.stage is Stage.FEED and event.entity_type == "user":
            facts.reconciling_users.add(event.entity_id)


def _note_reconciliation(event: Reconciliation, facts: TopicFacts) -> None:
    if event.entity_type == "pin":
        facts.pins.reconciling[event.entity_id] = str(event.stage)
    elif event.stage is Stage.FEED and event.entity_type == "user":
        facts.reconciling_users.add(event.entity_id)
    if event.stage is Stage.GRAPH:
        facts.graph_reconciliations += 1


def read_pin_rows(settings: Settings, pins: PinFacts) -> None:
    store = PinStore.from_settings(settings, create_tables=False)
    try:
        wanted = sorted(pins.created)
        for start in range(0, len(wanted), _PIN_BATCH):
            for pin_id, row in store.get_pins(wanted[start:start + _PIN_BATCH],
                                              with_embedding=False).items():
                if row.model_id is not None:
                    pins.stored_with_embedding.add(pin_id)
                elif row.pending_embedding is not None:
                    pins.stored_pending[pin_id] = row.pending_embedding
    finally:
        store.close()


def read_index(settings: Settings, facts: TopicFacts, worker_url: str | None) -> None:
    """The worker's vector count when it answers; else the snapshot's pins, plus the pins embedded
    after the offsets it covers (a starting worker catches up on those from the topic)."""
    if worker_url:
        answer = httpx.get(f"{worker_url.rstrip('/')}/healthz", timeout=10)
        facts.pins.index_size = int(answer.json().get("index_pins", 0))
        return
    versions = {version for version, _, _ in facts.embedding_positions.values()}
    indexed: set[str] = set()
    for version in versions:
        try:
            snapshot = read_snapshot(snapshot_dir(settings, version), expected_model_version=version)
        except SnapshotError:
            return  # no usable snapshot: the index is not checked
        indexed.update(snapshot.pin_ids)
        covered = snapshot.meta.offsets
        indexed.update(pin for pin, (v, partition, offset) in facts.embedding_positions.items()
                       if v == version and offset >= covered.get(partition, 0))
    facts.pins.indexed = indexed


def read_feeds(settings: Settings, facts: TopicFacts, hidden: dict[str, frozenset[str]],
               now_ms: int) -> list[UserFeedFacts]:
    """Active users (an interaction within the feed TTL) with their published and cached feeds."""
    active_since = now_ms - settings.feed_ttl_s * 1000
    cache = FeedCache.from_settings(settings)
    users = []
    try:
        for user, last_ms in sorted(facts.last_interaction_ms.items()):
            if last_ms < active_since:
                continue
            cached = cache.read_feed(user)
            feed_ms, published = facts.last_feed.get(user, (None, frozenset()))
            users.append(UserFeedFacts(
                user_id=user, last_interaction_ms=last_ms, last_feed_ms=feed_ms,
                published=published,
                cached=None if cached is None else frozenset(i.pin_id for i in cached),
                hidden=hidden.get(user, frozenset()), reconciling=user in facts.reconciling_users))
    finally:
        cache.close()
    return users


def verify_namespace(settings: Settings, *, worker_url: str | None = None,
                     now_ms: int | None = None) -> tuple[Verdict, TopicFacts]:
    """Read the namespace of `settings` and check every invariant."""
    codec = build_codec(settings)
    facts = read_topics(settings, codec)
    read_pin_rows(settings, facts.pins)
    read_index(settings, facts, worker_url)
    config = GraphConfig.from_settings(settings)
    expected = batch_recompute(facts.graph_events, config)
    graph = GraphStore.from_settings(settings, create_tables=False)
    try:
        stored = graph.scan()
    finally:
        graph.close()
    user_prefix = NODE_PREFIXES[NodeType.USER] + ":"
    hidden = {row.removeprefix(user_prefix): frozenset(column.split(":", 1)[1]
                                                       for column, edge in edges.items() if edge.weight < 0)
              for row, edges in expected.items() if row.startswith(user_prefix)}
    feeds = read_feeds(settings, facts, hidden, now_ms if now_ms is not None else int(time.time() * 1000))
    result = make_verdict(
        check_pins(facts.pins),
        check_graph(expected, stored, config, reconciling=facts.graph_reconciliations),
        check_feeds(feeds),
    )
    return result, facts
