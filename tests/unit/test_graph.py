"""The graph stage with an in-memory fake of the graph store: edge weights, decay math, order
independence, idempotency (in memory and across restarts), hides, co-engagement and memory bounds."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice

import pytest

from processors.graph import (
    GraphConfig,
    GraphEvent,
    GraphProcessor,
    batch_recompute,
    graph_differences,
    graph_of,
)
from processors.graph_state import Position, SeenIds, admit, position_of, session_pairs
from sinks.hbase import millis
from sinks.hbase_graph import (
    Edge,
    RowWrite,
    StoredRow,
    decode_applied,
    encode_applied,
    node_key,
    parse_node_key,
)
from streams.deadletter import RawRecord
from streams.errors import SinkError
from streams.events import EdgeType, InteractionAction, NodeType, PinCreated, PinInteraction
from streams.settings import load_settings
from streams.topics import HEADER_REPLAY_OF
from streams.workload.population import build_world
from streams.workload.sessions import iter_interactions

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
CONFIG = GraphConfig.from_settings(load_settings(metrics_port=0))
H = CONFIG.half_life_ms


class MemoryStore:
    """The graph store's contract over dicts; `fail_after` raises after that many rows written."""

    def __init__(self) -> None:
        self.rows: dict[str, StoredRow] = {}
        self.rows_read = 0
        self.fail_after: int | None = None

    def read_rows(self, keys: Iterable[str]) -> dict[str, StoredRow]:
        found = {key: StoredRow(dict(self.rows[key].edges), dict(self.rows[key].applied))
                 for key in keys if key in self.rows}
        self.rows_read += len(found)
        return found

    def write_batch(self, rows: Sequence[RowWrite]) -> None:
        for write in rows:
            if self.fail_after is not None:
                if self.fail_after == 0:
                    raise SinkError("HBase down", dependency="hbase")
                self.fail_after -= 1
            row = self.rows.setdefault(write.row, StoredRow())
            for column in write.deleted:
                row.edges.pop(column, None)
            row.edges.update(write.edges)
            if write.applied is not None:
                row.applied.clear()
                row.applied.update(write.applied)


def interaction(user: str, pin: str, action: str, at: datetime = T0, session: str = "s1",
                board: str | None = None, event_id: uuid.UUID | None = None) -> PinInteraction:
    return PinInteraction(event_id=event_id or uuid.uuid4(), event_time=at, user_id=user, pin_id=pin,
                          action=InteractionAction(action.upper()), session_id=session, board_id=board)


def workload_events(count: int = 2500, seed: int = 5) -> list[GraphEvent]:
    from streams.bench.graph import interaction_event

    world = build_world(seed, users=40, pins=400, clusters=6)
    records = iter_interactions(world, start=T0, days=3, sessions_per_user=6)
    events: list[GraphEvent] = [interaction_event(record) for record in islice(records, count)]
    events += [PinCreated(event_time=T0 - HOUR, pin_id=pin.pin_id, user_id=pin.creator_id,
                          board_id=pin.board_id, title="t", description="d", image_ref="sha256:x")
               for pin in world.pins[:50]]
    return events


def run(events: Sequence[GraphEvent], store: MemoryStore | None = None, batch: int = 100,
        config: GraphConfig = CONFIG, positions: Sequence[Position] | None = None
        ) -> tuple[GraphProcessor, MemoryStore]:
    store = store if store is not None else MemoryStore()
    processor = GraphProcessor(store, config)
    for start in range(0, len(events), batch):
        processor.process(events[start:start + batch],
                          positions[start:start + batch] if positions is not None else None)
    return processor, store


def graph(store: MemoryStore) -> dict[str, dict[str, Edge]]:
    return graph_of(store.rows)


def positions_for(events: Sequence[GraphEvent], partitions: int = 3) -> list[Position]:
    """Positions as Kafka would assign them: per partition by key, offsets in order."""
    next_offset = [0] * partitions
    out = []
    for event in events:
        partition = hash(event.user_id) % partitions
        out.append(Position(f"pins.interactions.v1/{partition}", next_offset[partition]))
        next_offset[partition] += 1
    return out


# --- weights ----------------------------------------------------------------------------------

def test_action_weights_and_board_edges() -> None:
    _, store = run([interaction("u1", "p1", "click"), interaction("u1", "p2", "save", board="b9"),
                    interaction("u1", "p3", "impression"), interaction("u1", "p4", "closeup")])
    edges = graph(store)
    assert edges["user:u1"] == {"pin:p1": Edge(1.0, millis(T0)), "pin:p2": Edge(4.0, millis(T0)),
                                "pin:p4": Edge(2.0, millis(T0))}  # an impression weighs 0: no edge
    assert edges["pin:p2"]["board:b9"] == Edge(1.0, millis(T0))
    assert edges["board:b9"] == {"pin:p2": Edge(1.0, millis(T0))}


def test_weights_are_configurable() -> None:
    config = GraphConfig.from_settings(load_settings(metrics_port=0, graph_weight_impression=0.1,
                                                     graph_weight_board=3.0))
    _, store = run([interaction("u1", "p3", "impression"), interaction("u1", "p2", "save", board="b9")],
                   config=config)
    assert graph(store)["user:u1"]["pin:p3"].weight == pytest.approx(0.1)
    assert graph(store)["pin:p2"]["board:b9"].weight == 3.0


def test_pin_creation_links_the_pin_and_its_board() -> None:
    pin = PinCreated(event_time=T0, pin_id="p7", user_id="u1", board_id="b1", title="t", description="",
                     image_ref="sha256:x")
    _, store = run([pin])
    assert graph(store) == {"pin:p7": {"board:b1": Edge(1.0, millis(T0))},
                            "board:b1": {"pin:p7": Edge(1.0, millis(T0))}}


def test_a_hide_makes_the_edge_negative_and_it_stays_negative_as_it_decays() -> None:
    _, store = run([interaction("u1", "p1", "click"), interaction("u1", "p1", "hide", at=T0 + HOUR)])
    edge = graph(store)["user:u1"]["pin:p1"]
    assert edge.weight == pytest.approx(1.0 * 2 ** (-3_600_000 / H) - 8.0)
    assert edge.at(edge.updated_ms + int(50 * H), H) < 0


# --- decay ------------------------------------------------------------------------------------

def test_decay_halves_per_half_life_and_matches_the_closed_form() -> None:
    assert Edge(4.0, 0).at(int(H), H) == pytest.approx(2.0)
    contributions = [(1.0, 0), (4.0, 5_000_000), (-8.0, 1_000), (2.0, 900_000_000)]
    edge = Edge(*contributions[0])
    for weight, at_ms in contributions[1:]:
        edge = edge.plus(weight, at_ms, H)
    newest = max(at for _, at in contributions)
    assert edge.updated_ms == newest
    assert edge.weight == pytest.approx(sum(w * 2 ** ((at - newest) / H) for w, at in contributions),
                                        rel=1e-12)


def test_shuffled_events_give_the_same_graph_as_a_batch_recomputation() -> None:
    events = workload_events()
    expected = batch_recompute(events, CONFIG)
    assert sum(len(row) for row in expected.values()) > 500
    assert any(k.startswith("pin:") and any(c.startswith("pin:") for c in row) for k, row in expected.items())
    for seed in (1, 2, 3):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        assert graph_differences(expected, batch_recompute(shuffled, CONFIG), H) == []
        _, store = run(shuffled, batch=random.Random(seed).choice([1, 7, 100, 1000]))
        assert graph_differences(expected, graph(store), H) == []


# --- idempotency ------------------------------------------------------------------------------

def test_the_same_events_twice_count_once() -> None:
    events = workload_events(1000)
    processor, store = run(events)
    before = graph(store)
    again = processor.process(events)
    assert (again.applied, again.duplicates, again.deltas) == (0, len(events), [])
    assert graph(store) == before


def test_redelivery_after_a_restart_is_exact_through_the_rows_applied_offsets() -> None:
    events = workload_events(1500)
    positions = positions_for(events)
    store = MemoryStore()
    announced = {d.event_id for d in GraphProcessor(store, CONFIG).process(events, positions).deltas}
    before = graph(store)
    restarted = GraphProcessor(store, CONFIG)  # nothing in memory: no seen ids, no cached rows
    batch = restarted.process(events[700:], positions[700:])
    assert batch.stale > 0 and graph(store) == before
    # Announced again (the first announcement may have been lost), under the same ids.
    assert batch.deltas and {d.event_id for d in batch.deltas} <= announced


@pytest.mark.parametrize("land", ["no rows", "some graph rows", "graph rows and some sessions"])
@pytest.mark.parametrize("committed", [600, 300])
def test_a_crash_in_the_middle_of_a_flush_loses_and_doubles_nothing(land: str, committed: int) -> None:
    events = workload_events(1500)
    positions = positions_for(events)
    expected = batch_recompute(events, CONFIG)
    store = MemoryStore()
    first = GraphProcessor(store, CONFIG)
    first.process(events[:600], positions[:600])
    first.apply(events[600:1100], positions[600:1100])
    pending = first.pending_writes()
    graph_rows = sum(not write.row.startswith("session:") for write in pending)
    store.fail_after = {"no rows": 0, "some graph rows": graph_rows // 2,
                        "graph rows and some sessions": graph_rows + 3}[land]
    with pytest.raises(SinkError):
        first.flush()
    store.fail_after = None
    # The process dies; its replacement gets everything after the last commit again.
    second = GraphProcessor(store, CONFIG)
    second.process(events[committed:], positions[committed:])
    assert graph_differences(expected, graph(store), H) == []


def test_a_failed_flush_keeps_its_rows_pending_until_the_next_one() -> None:
    events = workload_events(800)
    store = MemoryStore()
    processor = GraphProcessor(store, CONFIG)
    processor.apply(events[:400])
    store.fail_after = 3
    with pytest.raises(SinkError):
        processor.flush()
    store.fail_after = None
    assert processor.pending_writes()
    processor.process(events[400:])
    assert processor.pending_writes() == []
    assert graph_differences(batch_recompute(events, CONFIG), graph(store), H) == []


def test_a_replayed_copy_has_its_originals_position() -> None:
    original = RawRecord("pins.interactions.v1", 4, 1234, b"u1", b"v", (), None)
    copy = RawRecord("pins.interactions.v1", 1, 99, b"u1", b"v",
                     ((HEADER_REPLAY_OF, b"pins.interactions.v1/4/1234"),), None)
    assert position_of(original) == position_of(copy) == Position("pins.interactions.v1/4", 1234)


def test_delta_ids_are_the_same_when_recomputed() -> None:
    events = workload_events(600)
    deltas_a = GraphProcessor(MemoryStore(), CONFIG).apply(events).deltas
    deltas_b = GraphProcessor(MemoryStore(), CONFIG).apply(events).deltas
    assert [d.event_id for d in deltas_a] == [d.event_id for d in deltas_b]
    assert len({d.event_id for d in deltas_a}) == len(deltas_a)
    assert {d.edge_type for d in deltas_a} == {EdgeType.USER_PIN, EdgeType.PIN_BOARD, EdgeType.PIN_PIN}


# --- co-engagement ----------------------------------------------------------------------------

def test_pins_engaged_in_one_session_are_co_engaged_at_the_later_time() -> None:
    _, store = run([interaction("u1", "p1", "click"), interaction("u1", "p2", "closeup", at=T0 + HOUR),
                    interaction("u1", "p3", "impression", at=T0 + HOUR),
                    interaction("u1", "p4", "hide", at=T0 + HOUR),
                    interaction("u1", "p5", "click", session="other", at=T0 + HOUR)])
    edges = graph(store)
    later = millis(T0 + HOUR)
    assert edges["pin:p1"] == {"pin:p2": Edge(1.0, later)}
    assert edges["pin:p2"] == {"pin:p1": Edge(1.0, later)}
    assert "pin:p5" not in edges  # another session
    assert not any(k in edges for k in ("pin:p3", "pin:p4"))  # impressions and hides do not co-engage


def test_a_session_co_engages_only_its_first_pins() -> None:
    config = GraphConfig.from_settings(load_settings(metrics_port=0, graph_session_max_pins=20))
    events = [interaction("u1", f"p{i:02d}", "click", at=T0 + i * HOUR / 60) for i in range(30)]
    repeat = [interaction("u1", "p03", "save", at=T0 + HOUR, board="b1")]
    _, store = run(events + repeat, config=config)
    edges = graph(store)
    assert all(len([c for c in edges[f"pin:p{i:02d}"] if c.startswith("pin:")]) == 19 for i in range(20))
    assert not any(f"pin:p{i:02d}" in edges for i in range(20, 30))
    assert len(store.rows["session:u1:s1"].edges) == 20


def test_a_late_event_moves_a_pin_into_the_first_pins_and_another_out() -> None:
    members = {f"pin:p{i}": 1000 * i for i in range(3)}
    change = admit(members, "pin:late", 500, max_pins=3)
    assert change is not None
    assert change.members == {"pin:p0": 0, "pin:late": 500, "pin:p1": 1000}
    assert sorted(change.retracted) == [("pin:p0", "pin:p2", 2000), ("pin:p1", "pin:p2", 2000)]
    assert sorted(change.added) == [("pin:late", "pin:p0", 500), ("pin:late", "pin:p1", 1000)]
    assert session_pairs(change.members, 3) == {("pin:late", "pin:p0"): 500, ("pin:late", "pin:p1"): 1000,
                                                ("pin:p0", "pin:p1"): 1000}
    assert admit(members, "pin:p1", 5000, 3) is None  # engaged again later: nothing moves


# --- memory bounds ----------------------------------------------------------------------------

def test_the_seen_set_is_bounded_per_partition() -> None:
    seen = SeenIds(per_stream=100)
    for i in range(1000):
        seen.add(f"t/{i % 3}", i)
    assert len(seen) == 300
    assert 999 in seen and 0 not in seen
    seen.forget("t/0")
    assert len(seen) == 200


def test_an_event_id_forgotten_by_the_seen_set_counts_again_without_positions() -> None:
    config = GraphConfig.from_settings(load_settings(metrics_port=0, graph_dedup_ids_per_partition=10))
    events = [interaction("u1", f"p{i}", "click", session=f"s{i}") for i in range(30)]
    processor, store = run(events, config=config, batch=1)
    assert processor.process(events[-5:]).duplicates == 5  # recent ids: remembered
    assert processor.process(events[:1]).applied == 1  # beyond the bound: the documented limit
    assert store.rows["user:u1"].edges["pin:p0"].weight == 2.0


def test_the_row_cache_is_trimmed_to_its_bound_and_reads_through_on_a_miss() -> None:
    config = GraphConfig.from_settings(load_settings(metrics_port=0, graph_cache_max_cells=1000))
    events = workload_events()
    processor, store = run(events, config=config, batch=50)
    assert processor.cache.cells <= 1000
    assert sum(1 + len(row.edges) for row in store.rows.values()) > 2000
    _, unbounded = run(events, batch=50)
    assert store.rows_read > 2 * unbounded.rows_read  # evicted rows were read again
    assert graph_differences(batch_recompute(events, CONFIG), graph(store), H) == []


# --- the store's cell layout ------------------------------------------------------------------

def test_node_keys_and_applied_offsets_round_trip() -> None:
    assert node_key(NodeType.PIN, "p9") == "pin:p9"
    assert parse_node_key("board:b:1") == (NodeType.BOARD, "b:1")
    with pytest.raises(ValueError):
        parse_node_key("session:u1:s1")
    applied = {"pins.interactions.v1/3": 12, "x.pins.created.v1/0": 0}
    assert decode_applied(encode_applied(applied)) == applied
