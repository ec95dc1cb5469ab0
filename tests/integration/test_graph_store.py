"""The graph store and the graph stage against the real HBase (and Kafka): cell round trips,
deletes, top-N, events streamed through the processor equal to a batch recomputation, and the
same events delivered twice changing nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice

import happybase
import pytest

from processors.graph import (
    GraphConfig,
    GraphEvent,
    GraphProcessor,
    batch_recompute,
    graph_differences,
    graph_inputs,
    graph_of,
)
from processors.graph_state import Position
from sinks.hbase import hbase_pool
from sinks.hbase_graph import Edge, GraphStore, RowWrite
from sinks.pool import PoolConfig
from streams.bench.graph import interaction_event
from streams.consumer import EventConsumer
from streams.errors import SinkError
from streams.events import NodeType, PinCreated, PinInteraction
from streams.producer import EventProducer
from streams.settings import Settings
from streams.topics import PINS_CREATED, PINS_INTERACTIONS
from streams.workload.population import build_world
from streams.workload.sessions import iter_interactions
from tests.integration.kafka_fixtures import kafka_settings

pytestmark = pytest.mark.integration
__all__ = ["kafka_settings"]

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY_MS = 86_400_000


@pytest.fixture
def settings(stack_settings: Settings) -> Settings:
    return stack_settings.model_copy(update={"hbase_table_prefix": f"it{uuid.uuid4().hex[:12]}"})


@pytest.fixture
def store(settings: Settings) -> Iterator[GraphStore]:
    graph_store = GraphStore.from_settings(settings, timeout_s=10.0)
    yield graph_store
    graph_store.close()
    conn = happybase.Connection(settings.hbase_host, settings.hbase_port, timeout=30_000,
                                table_prefix=settings.hbase_table_prefix)
    try:
        for name in conn.tables():
            conn.delete_table(name, disable=True)
    finally:
        conn.close()


def workload(count: int = 3000) -> list[GraphEvent]:
    world = build_world(11, users=60, pins=500, clusters=8)
    records = iter_interactions(world, start=T0, days=2, sessions_per_user=5)
    events: list[GraphEvent] = [interaction_event(record) for record in islice(records, count)]
    events += [PinCreated(event_time=T0, pin_id=pin.pin_id, user_id=pin.creator_id, board_id=pin.board_id,
                          title="t", description="", image_ref="sha256:x") for pin in world.pins[:100]]
    return events


def test_rows_round_trip_with_applied_offsets_and_deletes(store: GraphStore) -> None:
    store.write_batch([
        RowWrite("user:u1", {"pin:p1": Edge(1.5, 1000), "pin:p2": Edge(-8.0, 2000), "board:b1": Edge(3.0, 0)},
                 applied={"pins.interactions.v1/2": 41}),
        RowWrite("pin:p1", {"pin:p2": Edge(1.0, 5)}),
    ])
    rows = store.read_rows(["user:u1", "pin:p1", "pin:nope"])
    assert rows["user:u1"].edges == {"pin:p1": Edge(1.5, 1000), "pin:p2": Edge(-8.0, 2000),
                                     "board:b1": Edge(3.0, 0)}
    assert rows["user:u1"].applied == {"pins.interactions.v1/2": 41}
    assert "pin:nope" not in rows
    top = store.top_neighbours("user:u1", 2, neighbour_type=NodeType.PIN)
    assert [key for key, _ in top] == ["pin:p1", "pin:p2"]  # the board is of another type
    assert top[1][1] == -8.0 and top[0][1] == pytest.approx(1.5, rel=1e-5)  # decayed to the newest
    grouped = store.neighbours(NodeType.USER, ["u1", "u404"], at_ms=1000 + DAY_MS * 7)
    assert set(grouped) == {"u1"}
    assert grouped["u1"][NodeType.PIN]["p1"] == pytest.approx(0.75)

    store.delete_edges([("user:u1", "pin:p2")])
    store.write_batch([RowWrite("user:u1", {"pin:p2": Edge(2.0, 3000)})])  # same millisecond: still wins
    assert store.edges("user:u1")["pin:p2"] == Edge(2.0, 3000)
    store.delete_rows(["pin:p1"])
    assert store.edges_many(["pin:p1", "user:u1"])["pin:p1"] == {}


def test_writing_the_same_rows_twice_changes_nothing(store: GraphStore) -> None:
    writes = [RowWrite(f"pin:p{i}", {f"pin:q{j}": Edge(float(j), j) for j in range(5)}) for i in range(300)]
    store.write_batch(writes)
    first = store.scan()
    store.write_batch(writes)
    assert store.scan() == first and len(first) == 300


def test_events_through_the_processor_equal_a_batch_recomputation(store: GraphStore,
                                                                   settings: Settings) -> None:
    config = GraphConfig.from_settings(settings)
    events = workload()
    positions = [Position(f"t/{hash(e.user_id) % 4}", i) for i, e in enumerate(events)]
    processor = GraphProcessor(store, config)
    for start in range(0, len(events), 250):
        processor.process(events[start:start + 250], positions[start:start + 250])
    expected = batch_recompute(events, config)
    stored = store.scan()
    assert graph_differences(expected, graph_of(stored), config.half_life_ms) == []
    assert sum(len(row) for row in expected.values()) > 1000

    # Delivered again, to the same processor and to a restarted one: nothing changes.
    assert processor.process(events).duplicates == len(events)
    again = GraphProcessor(store, config).process(events, positions)
    assert again.stale > 0
    assert store.scan() == stored


def test_events_streamed_from_kafka_twice_count_once(store: GraphStore, kafka_settings: Settings,
                                                     settings: Settings) -> None:
    config = GraphConfig.from_settings(settings)
    events = workload(2000)
    with EventProducer(kafka_settings) as producer:
        for event in events:
            if isinstance(event, PinInteraction):
                producer.send_event(PINS_INTERACTIONS, event.user_id, event)
            else:
                producer.send_event(PINS_CREATED, event.pin_id, event)
    topics = [kafka_settings.topic(PINS_INTERACTIONS.name), kafka_settings.topic(PINS_CREATED.name)]

    def consume_into_graph() -> tuple[set[uuid.UUID], int]:
        processor = GraphProcessor(store, config)
        deltas: set[uuid.UUID] = set()
        stale = 0
        with EventConsumer(kafka_settings, topics, group_id=f"it-{uuid.uuid4().hex[:8]}") as consumer:
            records = list(consumer.iter(max_records=len(events), idle_timeout=30))
        assert len(records) == len(events)
        for start in range(0, len(records), 500):
            batch = processor.process(*graph_inputs(records[start:start + 500]))
            deltas.update(d.event_id for d in batch.deltas)
            stale += batch.stale
        return deltas, stale

    first, stale = consume_into_graph()
    assert first and stale == 0
    stored = store.scan()
    assert graph_differences(batch_recompute(events, config), graph_of(stored), config.half_life_ms) == []
    again, stale = consume_into_graph()  # a second delivery: every row already includes every event
    assert store.scan() == stored and stale > 0
    assert again <= first  # announced again under the same delta ids, for consumers to drop


def test_an_unreachable_hbase_is_a_sink_error(settings: Settings) -> None:
    config = PoolConfig(name=f"graph-dead-{uuid.uuid4().hex[:6]}", dependency="hbase")
    pool = hbase_pool(settings.hbase_host, 1, settings.hbase_table_prefix, config, timeout_s=1.0)
    dead = GraphStore(pool)
    with pytest.raises(SinkError) as caught:
        dead.read_rows(["user:u1"])
    assert caught.value.dependency == "hbase"
    with pytest.raises(SinkError):
        dead.write_batch([RowWrite("user:u1", {"pin:p1": Edge(1.0, 0)})])
    dead.close()


def test_writer_epochs_are_atomic_increments_in_hbase(store: GraphStore, settings: Settings) -> None:
    other = GraphStore.from_settings(settings, timeout_s=10.0)
    try:
        assert store.writer_epoch() == 0
        first, second = store.claim_writer(), other.claim_writer()
        assert (first, second) == (1, 2)
        assert store.writer_epoch() == other.writer_epoch() == 2
    finally:
        other.close()
