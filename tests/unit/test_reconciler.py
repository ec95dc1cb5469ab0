"""The reconciler with fakes of our own interfaces: re-drives in order per entity, waits behind an
open breaker without burning attempts, dead-letters after N attempts with the full history,
commits only what is finished, and re-drives each stage idempotently (twice = once)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pytest

from processors.backoff import FixedBackoff
from processors.breaker import BreakerConfig, Breakers, BreakerState
from processors.feed import FeedComputer, FeedResult, FeedService
from processors.graph import batch_recompute, graph_differences, graph_of
from processors.reconcile import (
    REASON_EXHAUSTED,
    REASON_REFUSED,
    REASON_UNDECODABLE,
    Outcome,
    Reconciler,
    ReconcilerConfig,
)
from processors.reconcile_events import build_reconciliation
from processors.redrive import FeedRedriver, GraphRedriver, PinRedriver
from sinks.hbase import PinRecord
from streams.codec import AvroCodec
from streams.deadletter import RawRecord
from streams.errors import PinstreamError, ProcessingError, RedriveRefused, SinkError
from streams.events import (
    Event,
    FeedItem,
    FeedUpdated,
    PinCreated,
    PinInteraction,
    Reconciliation,
    Stage,
)
from streams.metrics import REGISTRY
from streams.topics import (
    FEEDS_UPDATED,
    HEADER_RECONCILE_DEPENDENCY,
    HEADER_RECONCILE_HISTORY,
    HEADER_RECONCILE_STAGE,
    TopicSpec,
)
from tests.unit.test_graph import CONFIG, T0, MemoryStore, interaction
from tests.unit.test_ratelimit import FakeClock

CODEC = AvroCodec()
TOPIC = "ops.reconciliation.v1"



@dataclass
class FakeRedriver:
    """Applies each entity's records to `applied`; `failures[entity]` are raised first, in turn."""

    failures: dict[str, list[Exception]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    applied: list[tuple[str, int]] = field(default_factory=list)

    async def redrive(self, record: Reconciliation) -> Outcome:
        self.calls.append(record.entity_id)
        pending = self.failures.get(record.entity_id)
        if pending:
            raise pending.pop(0)
        self.applied.append((record.entity_id, record.attempt))
        return Outcome.DONE


@dataclass
class FakeDeadLetters:
    sent: list[tuple[RawRecord, str, str]] = field(default_factory=list)

    def send(self, record: RawRecord, reason: str, error: str) -> None:
        self.sent.append((record, reason, error))


@dataclass
class FakeProducer:
    sent: list[tuple[str, str, Event]] = field(default_factory=list)

    def send_event(self, spec: TopicSpec, key: str, event: Event, *,
                   headers: Sequence[tuple[str, bytes]] = (), context: object = None) -> None:
        self.sent.append((spec.name, key, event))


def hbase_down() -> SinkError:
    return SinkError("HBase write_pins failed: TTransportException: refused", dependency="hbase")


def reconciliation(entity: str, *, stage: Stage = Stage.PIN_STORE, dependency: str = "hbase",
                   payload: bytes | None = b"x", attempt: int = 1) -> Reconciliation:
    record = build_reconciliation(hbase_down(), stage=stage, entity_type="pin", entity_id=entity,
                                  payload=payload, dependency=dependency)
    return dataclasses.replace(record, attempt=attempt)


def raw(record: Reconciliation | bytes, offset: int, partition: int = 0) -> RawRecord:
    value = record if isinstance(record, bytes) else CODEC.encode_event(record)
    key = None if isinstance(record, bytes) else record.entity_id.encode()
    return RawRecord(TOPIC, partition, offset, key, value, (), None)


def make(redriver: object, *, attempts: int = 3, threshold: int = 100, open_s: float = 10.0,
         delay: float = 1.0, buffered: int = 1000) -> tuple[Reconciler, FakeDeadLetters, FakeClock]:
    clock = FakeClock()
    dead = FakeDeadLetters()
    stages = dict.fromkeys(Stage, redriver)
    del stages[Stage.INDEX]
    reconciler = Reconciler(stages, dead, CODEC, backoff=FixedBackoff(delay),  # type: ignore[arg-type]
                            breakers=Breakers(BreakerConfig(threshold, open_s), clock),
                            config=ReconcilerConfig(attempts, buffered), clock=clock)
    return reconciler, dead, clock


def drive(reconciler: Reconciler) -> int:
    return asyncio.run(reconciler.drive_due())


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_record_that_succeeds_is_committed_past() -> None:
    redriver = FakeRedriver()
    reconciler, dead, _ = make(redriver)
    done_before = sample("pinstream_reconciler_redrives_total", stage="PIN_STORE", outcome="done")
    pending_before = sample("pinstream_reconciler_pending", stage="PIN_STORE")
    reconciler.add(raw(reconciliation("p1"), 7))
    assert sample("pinstream_reconciler_pending", stage="PIN_STORE") == pending_before + 1
    assert drive(reconciler) == 1
    assert sample("pinstream_reconciler_pending", stage="PIN_STORE") == pending_before
    assert sample("pinstream_reconciler_redrives_total", stage="PIN_STORE", outcome="done") == done_before + 1
    assert redriver.applied == [("p1", 1)]
    assert reconciler.committable() == {(TOPIC, 0): 8}
    assert reconciler.committable() == {}  # handed out once
    assert reconciler.held() == 0 and not dead.sent


def test_a_failed_record_waits_for_its_backoff_and_is_not_committed_meanwhile() -> None:
    redriver = FakeRedriver(failures={"p1": [hbase_down()]})
    reconciler, _, clock = make(redriver, delay=5.0)
    reconciler.add(raw(reconciliation("p1"), 0))
    assert drive(reconciler) == 0
    assert reconciler.committable() == {}
    assert reconciler.next_due_in() == pytest.approx(5.0)
    clock.now += 4.9
    assert drive(reconciler) == 0 and redriver.calls == ["p1"]  # not due yet
    clock.now += 0.1
    assert drive(reconciler) == 1
    assert redriver.calls == ["p1", "p1"]
    assert reconciler.committable() == {(TOPIC, 0): 1}


def test_one_entitys_records_stay_in_order_while_other_partitions_go_on() -> None:
    redriver = FakeRedriver(failures={"p1": [hbase_down(), hbase_down()]})
    reconciler, _, clock = make(redriver, attempts=5)
    reconciler.add(raw(reconciliation("p1", attempt=1), 0, partition=0))
    reconciler.add(raw(reconciliation("p1", attempt=2), 1, partition=0))  # same entity, later
    reconciler.add(raw(reconciliation("p9"), 0, partition=1))
    drive(reconciler)
    assert redriver.applied == [("p9", 1)]  # the other partition did not wait
    assert reconciler.committable() == {(TOPIC, 1): 1}
    for _ in range(3):
        clock.now += 1.0
        drive(reconciler)
    assert redriver.applied == [("p9", 1), ("p1", 1), ("p1", 2)]  # p1's records in their order
    assert redriver.calls.count("p1") == 4  # two failures, then each record once
    assert reconciler.committable() == {(TOPIC, 0): 2}


def test_while_a_dependency_is_down_records_wait_without_burning_attempts() -> None:
    redriver = FakeRedriver(failures={"a": [hbase_down()] * 3})
    reconciler, dead, clock = make(redriver, attempts=3, threshold=1, open_s=30.0, delay=0.0)
    reconciler.add(raw(reconciliation("a"), 0, partition=0))
    reconciler.add(raw(reconciliation("b"), 0, partition=1))
    reconciler.add(raw(reconciliation("c", stage=Stage.FEED, dependency="redis"), 0, partition=2))
    drive(reconciler)
    assert reconciler.breakers["hbase"].state is BreakerState.OPEN
    assert redriver.calls == ["a", "c"]  # "b" (hbase) waits; "c" (redis) is not held up
    for _ in range(20):  # 20 s of retries: the open breaker lets nothing through
        clock.now += 1.0
        drive(reconciler)
    assert redriver.calls == ["a", "c"] and not dead.sent
    assert reconciler.next_due_in() == pytest.approx(10.0)
    clock.now += 10.0
    drive(reconciler)  # half-open: one probe ("a" fails again), the breaker opens again
    assert redriver.calls == ["a", "c", "a"]
    assert reconciler.breakers["hbase"].state is BreakerState.OPEN
    clock.now += 30.0
    drive(reconciler)  # probe fails a third time: "a" is dead-lettered; "b" still waits
    assert [reason for _, reason, _ in dead.sent] == [REASON_EXHAUSTED]
    clock.now += 30.0
    drive(reconciler)
    assert redriver.applied[-1] == ("b", 1)  # probe succeeded: closed, "b" done with 0 failures
    assert reconciler.breakers["hbase"].state is BreakerState.CLOSED


def test_after_max_attempts_the_record_is_dead_lettered_with_its_full_history() -> None:
    errors: list[Exception] = [hbase_down(), ProcessingError("inference failed", stage="embed",
                                                             reason="model_error"), hbase_down()]
    redriver = FakeRedriver(failures={"p1": errors})
    reconciler, dead, clock = make(redriver, attempts=3)
    original = reconciliation("p1", attempt=2)
    reconciler.add(raw(original, 41))
    for _ in range(3):
        drive(reconciler)
        clock.now += 1.0
    (letter, reason, error), = dead.sent
    assert reason == REASON_EXHAUSTED and "TTransportException" in error
    assert reconciler.committable() == {(TOPIC, 0): 42}  # handed on: committed past
    final = CODEC.decode_event(letter.value or b"")
    assert isinstance(final, Reconciliation)
    assert (final.entity_id, final.stage, final.payload) == ("p1", original.stage, original.payload)
    assert final.attempt == 2 + 3 and final.first_failed_at == original.first_failed_at
    headers = dict(letter.headers)
    history = json.loads(headers[HEADER_RECONCILE_HISTORY])
    assert [h["attempt"] for h in history] == [1, 2, 3]
    assert [h["dependency"] for h in history] == ["hbase", "hbase", "hbase"]
    assert "model_error" not in history[1]["error"] and "inference failed" in history[1]["error"]
    assert all(h["at"] for h in history)
    assert headers[HEADER_RECONCILE_STAGE] == b"PIN_STORE"
    assert headers[HEADER_RECONCILE_DEPENDENCY] == b"hbase"
    assert letter.source == f"{TOPIC}/0/41"  # the dead letter names where it came from


def test_records_no_retry_can_help_are_dead_lettered_at_once() -> None:
    class Refusing:
        async def redrive(self, record: Reconciliation) -> Outcome:
            raise RedriveRefused("no payload", stage=str(record.stage), reason="no_payload")

    reconciler, dead, _ = make(Refusing())
    reconciler.add(raw(b"\x00garbage", 0))
    reconciler.add(raw(reconciliation("p2", payload=None), 1))
    reconciler.add(raw(reconciliation("p3", stage=Stage.INDEX), 2))  # no re-drive for INDEX
    assert drive(reconciler) == 3
    assert [reason for _, reason, _ in dead.sent] == [REASON_UNDECODABLE, REASON_REFUSED, REASON_REFUSED]
    assert "no re-drive for stage INDEX" in dead.sent[2][2]
    assert dead.sent[0][0].value == b"\x00garbage"  # undecodable bytes kept as they were
    assert reconciler.committable() == {(TOPIC, 0): 3}


def test_an_unexpected_error_is_retried_then_dead_lettered_not_a_crash() -> None:
    redriver = FakeRedriver(failures={"p1": [KeyError("bug")] * 2})
    reconciler, dead, clock = make(redriver, attempts=2)
    reconciler.add(raw(reconciliation("p1"), 0))
    drive(reconciler)
    clock.now += 1
    drive(reconciler)
    assert [reason for _, reason, _ in dead.sent] == [REASON_EXHAUSTED]
    assert "KeyError" in dead.sent[0][2]


def test_a_full_partition_is_reported_for_pausing_and_revoked_partitions_are_dropped() -> None:
    reconciler, _, _ = make(FakeRedriver(failures={"p1": [hbase_down()]}), buffered=2)
    reconciler.add(raw(reconciliation("p1"), 0))
    reconciler.add(raw(reconciliation("p2"), 1))
    reconciler.add(raw(reconciliation("p3"), 0, partition=1))
    assert reconciler.full() == {(TOPIC, 0)}
    reconciler.forget([(TOPIC, 0)])
    assert reconciler.full() == set() and reconciler.held() == 1


# --- the stage re-drives: the same record twice has one effect --------------------------------

def graph_record(event: PinInteraction, offset: int) -> Reconciliation:
    record = build_reconciliation(hbase_down(), stage=Stage.GRAPH, entity_type="event",
                                  entity_id=str(event.event_id), payload=CODEC.encode_event(event))
    return dataclasses.replace(record, source_topic="pins.interactions.v1", source_partition=0,
                               source_offset=offset)


def test_graph_re_drive_twice_counts_once() -> None:
    events = [interaction("u1", f"p{i}", "save", at=T0 + timedelta(minutes=i), board="b1")
              for i in range(4)]
    events += [interaction("u1", "p0", "click", at=T0 + timedelta(minutes=9))]
    store = MemoryStore()
    producer = FakeProducer()
    redriver = GraphRedriver(store, CONFIG, producer, CODEC)
    records = [graph_record(e, offset) for offset, e in enumerate(events)]
    outcomes = [asyncio.run(redriver.redrive(r)) for r in records]
    assert outcomes == [Outcome.DONE] * len(events)
    once = graph_of(store.rows)
    assert not graph_differences(batch_recompute(events, CONFIG), once, CONFIG.half_life_ms)
    deltas = [e.event_id for _, _, e in producer.sent]
    again = [asyncio.run(redriver.redrive(r)) for r in records]  # a redelivery, or a redrive
    assert again == [Outcome.ALREADY_APPLIED] * len(events)
    assert graph_of(store.rows) == once
    repeated = [e.event_id for _, _, e in producer.sent][len(deltas):]
    assert repeated and set(repeated) <= set(deltas)  # announced again under the same ids


def test_graph_re_drive_without_a_source_position_is_refused() -> None:
    event = interaction("u1", "p1", "save")
    record = build_reconciliation(hbase_down(), stage=Stage.GRAPH, entity_type="event",
                                  entity_id=str(event.event_id), payload=CODEC.encode_event(event))
    with pytest.raises(RedriveRefused) as refused:
        asyncio.run(GraphRedriver(MemoryStore(), CONFIG, FakeProducer(), CODEC).redrive(record))
    assert refused.value.reason == "no_source_position"


@dataclass
class FakeRows:
    rows: dict[str, PinRecord] = field(default_factory=dict)

    def get_pins(self, pin_ids: Sequence[str], *, with_embedding: bool = True) -> dict[str, PinRecord]:
        return {p: self.rows[p] for p in pin_ids if p in self.rows}


def stored(pin: PinCreated, *, embedded: bool) -> PinRecord:
    return PinRecord(pin.pin_id, pin.user_id, pin.board_id, pin.title, pin.description, None, (),
                     None, None, pin.event_id, pin.event_time,
                     np.ones(4, dtype=np.float32) if embedded else None,
                     pending_embedding=None if embedded else "model_error")


def test_pin_re_drive_leaves_a_row_that_already_has_the_pin_with_features_alone() -> None:
    pin = PinCreated(pin_id="p1", user_id="u", board_id="b", title="t", description="d",
                     image_ref="x.jpg")
    record = build_reconciliation(hbase_down(), stage=Stage.PIN_STORE, entity_type="pin",
                                  entity_id="p1", payload=CODEC.encode_event(pin))
    built: list[int] = []

    async def no_stage() -> tuple[object, object]:
        built.append(1)
        raise AssertionError("the embed stage must not run for a complete row")

    rows = FakeRows({"p1": stored(pin, embedded=True)})
    redriver = PinRedriver(no_stage, lambda: rows, CODEC)  # type: ignore[arg-type]
    assert asyncio.run(redriver.redrive(record)) is Outcome.ALREADY_APPLIED
    rows.rows["p1"] = stored(pin, embedded=False)  # stored without features: must re-embed
    with pytest.raises(AssertionError):
        asyncio.run(redriver.redrive(record))
    assert built == [1]


class MemoryFeeds:
    """FeedStore and remove_pin over dicts; `down` makes every call fail like Redis would."""

    def __init__(self) -> None:
        self.feeds: dict[str, list[FeedItem]] = {}
        self.writes = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise SinkError("Redis write_feeds failed: ConnectionError", dependency="redis")

    def write_feeds(self, feeds: Sequence[FeedUpdated], preferences: object = None) -> None:
        self._check()
        self.writes += 1
        for feed in feeds:
            self.feeds[feed.user_id] = list(feed.items)

    def read_feed(self, user_id: str, offset: int = 0, count: int | None = None) -> list[FeedItem] | None:
        self._check()
        return self.feeds.get(user_id)

    def remove_pin(self, user_id: str, pin_id: str) -> bool:
        self._check()
        before = len(self.feeds.get(user_id, []))
        self.feeds[user_id] = [i for i in self.feeds.get(user_id, []) if i.pin_id != pin_id]
        return len(self.feeds[user_id]) < before


class FixedComputer(FeedComputer):
    def __init__(self) -> None:
        pass

    def compute(self, user_id: str, *, served: object = (), hidden: object = (),
                pause: object = None) -> FeedResult:
        return FeedResult(user_id, (FeedItem("p1", 0.9, "walk"), FeedItem("p2", 0.5, "walk")), "m")


def test_feed_re_drive_rewrites_the_feed_and_fails_while_redis_is_down() -> None:
    cache = MemoryFeeds()
    producer = FakeProducer()
    redriver = FeedRedriver(FeedService(FixedComputer(), cache), cache, producer, CODEC)
    hide = interaction("u1", "p2", "hide")
    record = build_reconciliation(hbase_down(), stage=Stage.FEED, entity_type="user", entity_id="u1",
                                  payload=CODEC.encode_event(hide), dependency="redis")
    cache.down = True
    with pytest.raises(SinkError):
        asyncio.run(redriver.redrive(record))
    assert not producer.sent
    cache.down = False
    assert asyncio.run(redriver.redrive(record)) is Outcome.DONE
    assert [i.pin_id for i in cache.feeds["u1"]] == ["p1"]  # rewritten, the hidden pin removed again
    assert asyncio.run(redriver.redrive(record)) is Outcome.DONE  # twice: the same feed, replaced whole
    assert [i.pin_id for i in cache.feeds["u1"]] == ["p1"]
    assert [(topic, key) for topic, key, _ in producer.sent] == [(FEEDS_UPDATED.name, "u1")] * 2


def test_graph_records_of_one_source_partition_share_a_key_hence_an_order() -> None:
    from processors.reconcile_events import ReconciliationEmitter

    producer = FakeProducer()
    emitter = ReconciliationEmitter(producer)
    for offset in range(3):
        event = interaction("u1", f"p{offset}", "save")
        emitter.report(hbase_down(), stage=Stage.GRAPH, entity_type="event", entity_id=str(event.event_id),
                       payload=CODEC.encode_event(event), key="pins.interactions.v1/4")
    emitter.report(hbase_down(), stage=Stage.FEED, entity_type="user", entity_id="u1", payload=None)
    assert [key for _, key, _ in producer.sent] == ["pins.interactions.v1/4"] * 3 + ["u1"]


# --- the consumer loop: offsets are committed only once everything before them is acknowledged ---

@dataclass
class FakeSource:
    batches: list[list[RawRecord]]
    commits: list[dict[tuple[str, int], int]] = field(default_factory=list)
    paused: list[set[tuple[str, int]]] = field(default_factory=list)

    def fetch(self, timeout: float) -> list[RawRecord]:
        return self.batches.pop(0) if self.batches else []

    def pause_only(self, full: set[tuple[str, int]]) -> None:
        self.paused.append(set(full))

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        self.commits.append(dict(offsets))


@dataclass
class FakeOutbound:
    """A producer whose flush leaves records unacknowledged while `kafka_down`."""

    kafka_down: bool = False
    failed: int = 0

    def flush(self, timeout: float = 30.0) -> int:
        return 1 if self.kafka_down else 0


def test_the_loop_commits_only_after_the_produced_records_are_acknowledged() -> None:
    from processors.reconcile_kafka import run

    redriver = FakeRedriver()
    reconciler, _, _ = make(redriver)
    outbound = FakeOutbound(kafka_down=True)
    source = FakeSource([[raw(reconciliation("p1"), 0), raw(reconciliation("p2"), 1)]])

    async def scenario() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(run(reconciler, source, outbound, stop=stop))
        await asyncio.sleep(0.3)
        assert redriver.applied and source.commits == []  # done, but not acknowledged: no commit
        outbound.kafka_down = False
        await asyncio.sleep(0.6)
        stop.set()
        await loop

    asyncio.run(scenario())
    assert source.commits == [{(TOPIC, 0): 2}]  # the kept offsets, committed once Kafka acknowledged


def test_the_loop_stops_when_idle_and_pauses_full_partitions() -> None:
    from processors.reconcile_kafka import run

    reconciler, _, _ = make(FakeRedriver(failures={"p1": [hbase_down()] * 100}), buffered=2, delay=60.0)
    source = FakeSource([[raw(reconciliation("p1"), 0), raw(reconciliation("p2"), 1)]])
    stop = asyncio.Event()

    async def scenario() -> None:
        task = asyncio.create_task(run(reconciler, source, FakeOutbound(), stop=stop, idle_exit_s=0.2))
        await asyncio.sleep(0.3)
        assert not task.done()  # records are held: not idle
        assert {(TOPIC, 0)} in source.paused
        reconciler.forget([(TOPIC, 0)])
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert source.commits == []


@dataclass
class FakeBatchRedriver:
    """Answers per record: `fail` entities fail alone (once each) while the others are done."""

    fail: set[str] = field(default_factory=set)
    batches: list[list[str]] = field(default_factory=list)

    async def redrive(self, record: Reconciliation) -> Outcome:
        raise AssertionError("a batching re-drive is called with batches")

    async def redrive_batch(self, records: Sequence[Reconciliation]) -> list[Outcome | PinstreamError]:
        self.batches.append([r.entity_id for r in records])
        results: list[Outcome | PinstreamError] = []
        for record in records:
            if record.entity_id in self.fail:
                self.fail.discard(record.entity_id)
                results.append(ProcessingError("inference failed", stage="embed", reason="model_error"))
            else:
                results.append(Outcome.DONE)
        return results


def test_batches_hold_distinct_entities_and_commits_wait_for_a_failed_head() -> None:
    redriver = FakeBatchRedriver(fail={"a"})
    reconciler, _, clock = make(redriver)
    for offset, entity in enumerate(["a", "b", "c", "b", "d"]):
        reconciler.add(raw(reconciliation(entity), offset))
    drive(reconciler)
    # "a" failed alone; "b" and "c" went with it; the second "b" starts the next batch after it.
    assert redriver.batches == [["a", "b", "c"]]
    assert reconciler.committable() == {}  # "a" at offset 0 is not done: nothing committed
    clock.now += 1.0
    drive(reconciler)
    assert redriver.batches[1:] == [["a", "b", "d"]]
    assert reconciler.committable() == {(TOPIC, 0): 5}  # past the highest finished offset
    assert reconciler.held() == 0


def test_a_failed_commit_is_retried_with_the_next_one_not_fatal() -> None:
    from processors.reconcile_kafka import run

    class FlakySource(FakeSource):
        def commit(self, offsets: dict[tuple[str, int], int]) -> None:
            if not self.commits and not getattr(self, "failed_once", False):
                self.failed_once = True
                raise PinstreamError("commit failed for group g: broker down")
            super().commit(offsets)

    reconciler, _, _ = make(FakeRedriver())
    source = FlakySource([[raw(reconciliation("p1"), 0)], [], [raw(reconciliation("p2"), 1)]])
    report = asyncio.run(run(reconciler, source, FakeOutbound(), stop=asyncio.Event(), idle_exit_s=0.3))
    assert report.finished == 2
    assert source.commits == [{(TOPIC, 0): 1}, {(TOPIC, 0): 2}]  # the failed commit was made again
