"""The interaction path on the real stack through a worker process: interactions -> graph in HBase
-> feeds in Redis and on feeds.updated.v1 (read with the consumer SDK) -> GET /feed; a hide
removes the pin from the cached feed at once."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis

from sinks.hbase_graph import GraphStore, node_key
from streams.consumer import EventConsumer
from streams.events import FeedUpdated, NodeType
from streams.localworker import LocalWorker
from streams.producer import PinProducer
from streams.topics import FEEDS_UPDATED, HEADER_FEED_CHANGE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWorker]:
    running = LocalWorker(tmp_path_factory.mktemp("worker"), feed_refresh_interval_s=0.5)
    with running:
        yield running


def _interact(worker: LocalWorker, rows: list[tuple[str, str, str, str | None]]) -> None:
    start = datetime.now(UTC) - timedelta(minutes=5)
    with PinProducer(worker.settings) as producer:
        for i, (user, pin, action, board) in enumerate(rows):
            producer.interact(user_id=user, pin_id=pin, action=action, session_id=f"s-{user}",
                              board_id=board, event_time=start + timedelta(seconds=i))


def _feed(worker: LocalWorker, user: str) -> dict[str, object]:
    return dict(httpx.get(f"{worker.url}/feed/{user}", timeout=30).json())


def test_interactions_build_the_graph_and_feeds_that_consumers_read(worker: LocalWorker) -> None:
    # Two users save pins on shared boards; "alice" should be offered what "bob" saved.
    rows: list[tuple[str, str, str, str | None]] = []
    for i in range(6):
        rows.append(("bob", f"p{i}", "save", "b-lamps"))
        rows.append(("bob", f"p{i}", "closeup", None))
    _interact(worker, rows)

    # bob's edges are in HBase once his batch is done (the stage writes them before it commits).
    # Only then alice interacts: her events sit on another partition, and a feed is recomputed
    # when its own user's edges change, not when a neighbour's do; so a re-rank of hers done
    # before bob's batch would stay without his pins until she interacts again.
    graph = GraphStore.from_settings(worker.settings, create_tables=False)
    deadline = time.monotonic() + 60
    try:
        while not {key.split(":", 1)[1] for key in graph.edges(node_key(NodeType.USER, "bob"))} >= {
                f"p{i}" for i in range(6)}:
            assert time.monotonic() < deadline, "bob's edges never reached HBase"
            time.sleep(0.2)
    finally:
        graph.close()
    alice_rows: list[tuple[str, str, str, str | None]] = [("alice", "p0", "save", "b-lamps"),
                                                          ("alice", "p1", "click", None)]
    _interact(worker, alice_rows)
    rows += alice_rows

    # Read her updates (re-rank and live patches) until one covers all of bob's saves and none
    # has come for 3 s.
    consumer = EventConsumer(worker.settings, [worker.settings.topic(FEEDS_UPDATED.name)],
                             group_id=f"g-{uuid.uuid4()}")
    alice: FeedUpdated | None = None
    covered = False
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (covered and time.monotonic() - quiet_since > 3):
        record = consumer.poll(0.5)
        if record is not None and isinstance(record.value, FeedUpdated) and record.value.user_id == "alice":
            alice, quiet_since = record.value, time.monotonic()
            covered = covered or {"p2", "p3", "p4", "p5"} <= {item.pin_id for item in alice.items}
    consumer.close()
    assert alice is not None and covered, "no feed of alice covering bob's saves"
    offered = {item.pin_id for item in alice.items}
    assert {"p2", "p3", "p4", "p5"} <= offered  # bob's saves on the shared board
    assert not offered & {"p0"}  # already saved by alice
    assert all(item.reason for item in alice.items)

    served = _feed(worker, "alice")
    assert served["from_cache"] is True
    assert {item["pin_id"] for item in served["items"]} == offered  # type: ignore[union-attr]

    # The stage's own consumer group shows in /healthz, with what it processed.
    stage = httpx.get(f"{worker.url}/healthz", timeout=30).json()["interactions"]
    assert stage["group"] == worker.settings.graph_group_id
    assert stage["records"] >= len(rows) and stage["partitions"] > 0


def _live_patch_of(worker: LocalWorker, user: str, reason: str,
                   act: Callable[[], None]) -> FeedUpdated | None:
    """The first live-patch announcement of `user`'s feed with an item lifted for `reason`, after
    `act` (within 60 s)."""
    consumer = EventConsumer(worker.settings, [worker.settings.topic(FEEDS_UPDATED.name)],
                             group_id=f"g-{uuid.uuid4()}")
    try:
        act()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            record = consumer.poll(1.0)
            if (record is not None and isinstance(record.value, FeedUpdated)
                    and record.value.user_id == user
                    and dict(record.headers).get(HEADER_FEED_CHANGE) == b"live"
                    and any(item.reason == reason for item in record.value.items)):
                return record.value
        return None
    finally:
        consumer.close()


def test_a_save_patches_the_cached_feed_live_before_the_full_refresh(worker: LocalWorker) -> None:
    # bob's session co-engaged p0..p5; alice already engaged p0 and p1. Her save of p2 must take p2
    # out of her cached feed and lift its co-engaged pins she has not engaged (p3, p4, p5) to the
    # top, in a patch announced as such, not in a re-rank.
    deadline = time.monotonic() + 60
    while not _feed(worker, "alice")["items"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    patch = _live_patch_of(worker, "alice", "live:p2",
                           lambda: _interact(worker, [("alice", "p2", "save", "b-lamps")]))
    assert patch is not None, "no live patch of alice's feed announced"
    assert patch.model.endswith("+live")
    top = patch.items[:3]
    assert {item.pin_id for item in top} == {"p3", "p4", "p5"}
    assert all(item.reason == "live:p2" for item in top)
    assert "p2" not in {item.pin_id for item in patch.items}


def test_the_live_patch_process_is_started_again_when_it_dies(worker: LocalWorker) -> None:
    before = worker.health()["live_patches"]
    assert before["alive"] and before["partitions"] > 0
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        live = httpx.get(f"{worker.url}/healthz", timeout=30).json()["live_patches"]
        if live["pid"] != before["pid"] and live["alive"] and live["partitions"] > 0:
            break
        assert time.monotonic() < deadline, f"the live patch process was not started again: {live}"
        time.sleep(0.5)
    assert live["restarts"] == before["restarts"] + 1
    # The new process reads its rows from HBase: p4's co-engaged pins alice has not engaged.
    patch = _live_patch_of(worker, "alice", "live:p4",
                           lambda: _interact(worker, [("alice", "p4", "save", "b-lamps")]))
    assert patch is not None, "no live patch after the restart"
    assert {item.pin_id for item in patch.items if item.reason == "live:p4"} == {"p3", "p5"}


def test_hide_removes_the_pin_from_the_cached_feed_at_once(worker: LocalWorker) -> None:
    deadline = time.monotonic() + 60
    while not _feed(worker, "alice")["items"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    first = _feed(worker, "alice")["items"][0]["pin_id"]  # type: ignore[index]
    _interact(worker, [("alice", first, "hide", None)])
    deadline = time.monotonic() + 30
    while first in {i["pin_id"] for i in _feed(worker, "alice")["items"]}:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "hidden pin still in the feed"
        time.sleep(0.2)
    time.sleep(2)  # a later refresh must not bring it back
    assert first not in {i["pin_id"] for i in _feed(worker, "alice")["items"]}  # type: ignore[union-attr]


def test_a_refresh_owed_by_a_dead_worker_is_done_by_the_next_one(worker: LocalWorker) -> None:
    _interact(worker, [("carol", "p2", "save", "b-lamps"), ("carol", "p3", "closeup", None)])
    client = redis.Redis.from_url(worker.settings.redis_url, socket_timeout=5)
    stale_key = f"feeds:stale:{worker.settings.topic_prefix}"
    # Feed keys carry the namespace (the topic prefix): other tests' feeds share this Redis.
    feed_key, reasons_key = (f"{worker.settings.topic_prefix}{kind}:carol" for kind in ("feed", "feedr"))
    try:
        deadline = time.monotonic() + 60
        while not client.exists(feed_key) or client.zscore(stale_key, "carol") is not None:
            assert time.monotonic() < deadline, "carol's feed never written, or her mark never cleared"
            time.sleep(0.2)
        # What a worker killed between acknowledging carol's interactions and refreshing her
        # feed leaves behind: the mark, and no feed.
        client.zadd(stale_key, {"carol": time.time() * 1000})
        client.delete(feed_key, reasons_key)
        worker.stop()
        worker.start()
        deadline = time.monotonic() + 60
        # The feed is written first, the mark cleared right after (a second call).
        while not client.exists(feed_key) or client.zscore(stale_key, "carol") is not None:
            assert time.monotonic() < deadline, "the new worker did not refresh the feed it was owed"
            time.sleep(0.2)
        assert client.zcard(feed_key) > 0
    finally:
        client.close()
