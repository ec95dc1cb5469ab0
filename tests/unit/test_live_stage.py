"""The live patch stage: Avro interaction records in, feed patches planned from the rows kept
beside it out to the cache; records it cannot use are counted and skipped, failures only logged."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from processors.feed_patch import PatchParams
from processors.live_patches import LivePatcher
from processors.live_rows import LiveRows
from processors.live_stage import ANNOUNCE_IN_BATCH, LivePatchStage, LiveTally
from sinks.hbase_graph import Edge, StoredRow
from sinks.redis import FeedPatch
from streams.codec import AvroCodec
from streams.deadletter import RawRecord
from streams.errors import SinkError
from streams.events import FeedItem, InteractionAction, PinCreated, PinInteraction

NOW_MS = 1_790_000_000_000
WEIGHTS = {InteractionAction.SAVE: 3.0, InteractionAction.CLICK: 1.0, InteractionAction.IMPRESSION: 0.0,
           InteractionAction.HIDE: -5.0}
CODEC = AvroCodec()


class FakeStore:
    def __init__(self, rows: dict[str, dict[str, Edge]]) -> None:
        self.rows = rows
        self.fail = False

    def read_rows(self, keys: Iterable[str]) -> Mapping[str, StoredRow]:
        if self.fail:
            raise SinkError("hbase down", dependency="hbase")
        return {key: StoredRow(dict(self.rows[key])) for key in keys if key in self.rows}


class FakeCache:
    def __init__(self, cached: set[str]) -> None:
        self.cached = cached
        self.patches: list[FeedPatch] = []
        self.fail = False

    def patch_feeds(self, patches: list[FeedPatch]) -> list[int | None]:
        if self.fail:
            raise SinkError("redis down", dependency="redis")
        self.patches.extend(patches)
        return [200 if p.user_id in self.cached else None for p in patches]

    def read_feeds(self, users: list[str]) -> list[list[FeedItem] | None]:
        return [[FeedItem("x", 1.0, "live:x")] if u in self.cached else None for u in users]


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def send_event(self, spec: Any, key: str, event: Any, *, headers: Any = ()) -> None:
        self.sent.append((key, event))


def _record(event: Any, offset: int, value: bytes | None = None) -> RawRecord:
    body = value if value is not None else CODEC.encode_event(event)
    return RawRecord("pins.interactions.v1", 0, offset, b"k", body, (), NOW_MS - 40)


def _interaction(user: str, pin: str, action: InteractionAction) -> PinInteraction:
    return PinInteraction(event_id=uuid.uuid4(), event_time=datetime.fromtimestamp(NOW_MS / 1000, UTC),
                          user_id=user, pin_id=pin, action=action, session_id="s1")


def _stage(store: FakeStore, cache: FakeCache) -> LivePatchStage:
    params = PatchParams(WEIGHTS, related=3, min_engaged_weight=0.5, half_life_ms=7 * 86_400_000.0)
    rows = LiveRows(store, max_cells=10_000, ttl_s=60.0, half_life_ms=params.half_life_ms)
    patcher = LivePatcher(cache, FakeProducer(), model="pixie", announce_interval_s=30.0)
    return LivePatchStage(rows=rows, patcher=patcher, codec=CODEC, params=params, clock_ms=lambda: NOW_MS)


def _run(stage: LivePatchStage, records: list[RawRecord]) -> None:
    """One batch, until its patches have landed (they land in a thread while the next batch is
    planned)."""

    async def batch() -> None:
        await stage.process(records)
        await stage.drain()

    asyncio.run(batch())


def test_a_save_removes_the_pin_and_lifts_its_co_engaged_pins_not_yet_engaged() -> None:
    store = FakeStore({"pin:p2": {"pin:p3": Edge(2.0, NOW_MS), "pin:p4": Edge(1.0, NOW_MS),
                                  "board:b1": Edge(5.0, NOW_MS)},
                       "user:alice": {"pin:p3": Edge(3.0, NOW_MS)}})
    cache = FakeCache({"alice"})
    stage = _stage(store, cache)
    _run(stage, [_record(_interaction("alice", "p2", InteractionAction.SAVE), 1)])
    # p3 is hers already; p4 is half as strong as p3, the pin's strongest
    assert cache.patches == [FeedPatch("alice", ("p2",), (("p4", 0.5, "live:p2"),))]
    tally = stage.take_tally()
    assert (tally.planned, tally.patched, tally.failed, tally.records) == (1, 1, 0, 1)
    assert len(tally.lags) == 1 and tally.lags[0] > 0  # Kafka timestamp to the patch landing


def test_a_pin_engaged_a_batch_ago_is_not_lifted_again() -> None:
    store = FakeStore({"pin:p2": {"pin:p4": Edge(1.0, NOW_MS)}, "pin:p4": {"pin:p2": Edge(1.0, NOW_MS)},
                       "user:alice": {}})
    cache = FakeCache({"alice"})
    stage = _stage(store, cache)
    _run(stage, [_record(_interaction("alice", "p2", InteractionAction.SAVE), 1)])
    # HBase has not seen her save yet (the graph stage writes it a moment later): the row noted it.
    _run(stage, [_record(_interaction("alice", "p4", InteractionAction.SAVE), 2)])
    assert cache.patches[1] == FeedPatch("alice", ("p4",), ())


def test_records_it_cannot_use_are_counted_and_skipped() -> None:
    cache = FakeCache({"alice"})
    stage = _stage(FakeStore({}), cache)
    created = PinCreated(event_id=uuid.uuid4(), event_time=datetime.fromtimestamp(NOW_MS / 1000, UTC),
                         pin_id="p1", user_id="alice", board_id="b1", image_url="blob://x", title="t",
                         description="d")
    records = [_record(None, 1, b"\x00garbage"), _record(created, 2),
               _record(_interaction("alice", "p9", InteractionAction.HIDE), 3)]
    _run(stage, records)
    tally = stage.take_tally()
    assert tally.skipped == 2
    assert cache.patches == [FeedPatch("alice", ("p9",), ())]  # the hide still goes through


def test_store_and_redis_failures_are_logged_not_raised() -> None:
    store = FakeStore({"pin:p2": {"pin:p3": Edge(1.0, NOW_MS)}})
    cache = FakeCache({"alice"})
    stage = _stage(store, cache)
    store.fail = True
    cache.fail = True
    _run(stage, [_record(_interaction("alice", "p2", InteractionAction.SAVE), 1)])
    tally = stage.take_tally()
    assert (tally.planned, tally.patched, tally.failed) == (1, 0, 1)
    store.fail = cache.fail = False
    _run(stage, [_record(_interaction("alice", "p2", InteractionAction.SAVE), 2)])
    assert cache.patches[-1].lift == (("p3", 1.0, "live:p2"),)  # read once HBase answers


def test_patched_feeds_are_announced_at_once_then_once_per_interval() -> None:
    cache = FakeCache({"alice"})
    stage = _stage(FakeStore({"user:alice": {}}), cache)
    _run(stage, [_record(_interaction("alice", "p2", InteractionAction.SAVE), 1)])
    _run(stage, [_record(_interaction("alice", "p3", InteractionAction.SAVE), 2)])
    assert asyncio.run(stage.announce()) == 0  # her interval has not passed
    producer = stage.patcher.producer
    assert isinstance(producer, FakeProducer)
    assert [(key, event.model) for key, event in producer.sent] == [("alice", "pixie+live")]
    assert stage.take_tally().announced == 1
    assert len(cache.patches) == 2  # both patches landed; one announcement covers them


def test_a_report_taken_while_a_batch_waits_on_redis_loses_nothing() -> None:
    class SlowCache(FakeCache):
        def patch_feeds(self, patches: list[FeedPatch]) -> list[int | None]:
            time.sleep(0.2)  # the reporter takes its tally meanwhile
            return super().patch_feeds(patches)

    stage = _stage(FakeStore({"user:alice": {}}), SlowCache({"alice"}))

    async def scenario() -> list[LiveTally]:
        save = _record(_interaction("alice", "p2", InteractionAction.SAVE), 1)
        batch = asyncio.create_task(stage.process([save]))
        await asyncio.sleep(0.1)
        first = copy.deepcopy(stage.take_tally())  # as sent: later changes to it would be lost
        await batch
        await stage.drain()
        return [first, stage.take_tally()]

    tallies = asyncio.run(scenario())
    assert sum(t.patched for t in tallies) == 1 and sum(len(t.lags) for t in tallies) == 1
    assert sum(t.announced for t in tallies) == 1 and sum(t.records for t in tallies) == 1


def test_a_batch_announces_a_few_feeds_at_once_and_leaves_the_rest_for_later() -> None:
    users = [f"u{i:02d}" for i in range(ANNOUNCE_IN_BATCH + 3)]
    cache = FakeCache(set(users))
    stage = _stage(FakeStore({}), cache)
    _run(stage, [_record(_interaction(u, "p2", InteractionAction.SAVE), i) for i, u in enumerate(users)])
    assert stage.take_tally().announced == ANNOUNCE_IN_BATCH
    assert asyncio.run(stage.announce(2)) == 2
    assert asyncio.run(stage.announce()) == 1



def test_the_next_batch_is_planned_while_the_patches_land_and_patches_stay_in_order() -> None:
    calls: list[tuple[str, float, float]] = []

    class SlowCache(FakeCache):
        def patch_feeds(self, patches: list[FeedPatch]) -> list[int | None]:
            began = time.perf_counter()
            time.sleep(0.2)
            calls.append((patches[0].user_id, began, time.perf_counter()))
            return super().patch_feeds(patches)

    cache = SlowCache({"alice", "bob"})
    stage = _stage(FakeStore({"user:alice": {}, "user:bob": {}}), cache)

    async def scenario() -> float:
        started = time.perf_counter()
        await stage.process([_record(_interaction("alice", "p2", InteractionAction.SAVE), 1)])
        returned = time.perf_counter() - started
        assert cache.patches == []  # still in flight: the stage went on
        await stage.process([_record(_interaction("bob", "p3", InteractionAction.SAVE), 2)])
        await stage.drain()
        return returned

    assert asyncio.run(scenario()) < 0.15
    assert [user for user, _, _ in calls] == ["alice", "bob"]
    assert calls[1][1] >= calls[0][2]  # bob's patch was sent once alice's had landed
    tally = stage.take_tally()
    assert (tally.planned, tally.patched, len(tally.lags)) == (2, 2, 2)


def test_a_patch_thread_that_raises_counts_its_patches_as_failed_and_the_stage_goes_on() -> None:
    class BrokenCache(FakeCache):
        broke = False

        def patch_feeds(self, patches: list[FeedPatch]) -> list[int | None]:
            if not self.broke:  # the first call only
                self.broke = True
                raise RuntimeError("unexpected reply")
            return super().patch_feeds(patches)

    cache = BrokenCache({"alice"})
    stage = _stage(FakeStore({"user:alice": {}}), cache)
    _run(stage, [_record(_interaction("alice", "p2", InteractionAction.SAVE), 1)])
    _run(stage, [_record(_interaction("alice", "p3", InteractionAction.SAVE), 2)])
    tally = stage.take_tally()
    assert (tally.planned, tally.failed, tally.patched) == (2, 1, 1)
    assert [p.user_id for p in cache.patches] == ["alice"]
