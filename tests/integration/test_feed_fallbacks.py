"""The feed's fallbacks inside a real worker, each named in the response or the FeedUpdated event
and counted in the worker's metrics: ranker over its deadline -> co-engagement scores; fewer than
200 candidates -> trending fill; Redis gone -> served uncached with a Reconciliation for the feed,
cached again once Redis is back; graph store (HBase Thrift) gone -> cached preferences on read (the
graph stage holds its batch meanwhile), the graph again once it is back.

The worker gets a private redis-server (stopped and restarted here) and reaches HBase through a
proxy that the test cuts, so the stack's servers stay up for everyone else. Its ranker deadline is
a microsecond, so every ranking misses it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from streams.campaigns.sampling import wait_caught_up
from streams.consumer import EventConsumer
from streams.events import ConsumedRecord, Fallback, FeedUpdated, Reconciliation, Stage
from streams.localworker import LocalRedis, LocalWorker, free_port
from streams.producer import PinProducer
from streams.settings import Settings
from streams.topics import FEEDS_UPDATED, PINS_INTERACTIONS, RECONCILIATION
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    """The worker and what the tests do to its stores."""

    worker: LocalWorker
    redis_server: LocalRedis
    hbase: TcpProxy
    metrics_port: int

    def feed(self, user: str) -> dict[str, Any]:
        answer = httpx.get(f"{self.worker.url}/feed/{user}", timeout=60)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def drop_cached_feed(self, user: str) -> None:
        client = redis.Redis.from_url(self.redis_server.url)
        try:
            prefix = self.worker.settings.topic_prefix  # feed keys carry the namespace
            client.delete(f"{prefix}feed:{user}", f"{prefix}feedr:{user}")
        finally:
            client.close()

    def fallbacks_counted(self, fallback: Fallback) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        sample = f'pinstream_feed_fallbacks_total{{fallback="{fallback}"}}'
        return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample))

    def interact(self, rows: list[tuple[str, str, str, str | None]]) -> None:
        start = datetime.now(UTC) - timedelta(minutes=5)
        with PinProducer(self.worker.settings) as producer:
            for i, (user, pin, action, board) in enumerate(rows):
                producer.interact(user_id=user, pin_id=pin, action=action, session_id=f"s-{user}",
                                  board_id=board, event_time=start + timedelta(seconds=i))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_settings: Settings) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("fallbacks")
    metrics_port = free_port()
    with LocalRedis(workdir) as redis_server, \
            TcpProxy((stack_settings.hbase_host, stack_settings.hbase_port)) as hbase:
        worker = LocalWorker(workdir, redis_url=redis_server.url, hbase_port=hbase.port,
                             metrics_port=metrics_port, feed_refresh_interval_s=0.3,
                             feed_ranker_deadline_ms=0.001,
                             # Every feed reads HBase, as one whose rows the graph stage does not
                             # hold would (with them in memory a feed needs no HBase at all).
                             feed_graph_from_cache=False)
        try:
            worker.start()
            running = Stack(worker, redis_server, hbase, metrics_port)
            rows: list[tuple[str, str, str, str | None]] = []
            for i in range(6):
                rows += [("bob", f"p{i}", "save", "b-lamps"), ("bob", f"p{i}", "closeup", None)]
            rows += [("alice", "p0", "save", "b-lamps"), ("alice", "p1", "click", None),
                     ("carol", "p9", "save", "b-other"), ("carol", "p0", "click", None),
                     ("dave", "hot", "save", "b-hot"), ("dave", "hot", "closeup", None)]
            running.interact(rows)
            wait_for(worker.settings, FEEDS_UPDATED.name, lambda e: isinstance(e, FeedUpdated)
                     and e.user_id == "alice")
            yield running
        finally:
            if hbase.is_cut:  # the namespace's tables are deleted through it
                hbase.restore()
            worker.stop()
            worker.cleanup()


def wait_for(settings: Settings, topic: str, matches: Callable[[Any], bool], timeout_s: float = 90.0
             ) -> ConsumedRecord:
    consumer = EventConsumer(settings, [settings.topic(topic)], group_id=f"g-{uuid.uuid4()}")
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            record = consumer.poll(1.0)
            if record is not None and matches(record.value):
                return record
    finally:
        consumer.close()
    raise AssertionError(f"no matching event on {topic} within {timeout_s:.0f} s")


def eventually(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.3)


def test_ranker_deadline_and_too_few_candidates_are_named_and_counted(stack: Stack) -> None:
    # Trending fills once the trending set holds a pin outside alice's neighbourhood (dave's):
    # her first refresh may come before that, so a scroll past a pin asks for another. It is
    # sent once every earlier interaction is in HBase: a refresh that read the graph before bob's
    # saves were written could serve his pins by trending alone.
    settings = stack.worker.settings
    assert wait_caught_up(settings, {settings.graph_group_id: [settings.topic(PINS_INTERACTIONS.name)]},
                          90) is not None
    asked = datetime.now(UTC)
    stack.interact([("alice", "p2", "impression", None)])
    update = wait_for(settings, FEEDS_UPDATED.name,
                      lambda e: isinstance(e, FeedUpdated) and e.user_id == "alice"
                      and e.event_time >= asked and Fallback.TRENDING_FILL in e.fallbacks
                      and {"p2", "p3", "p4", "p5"} <= {item.pin_id for item in e.items}).value
    assert isinstance(update, FeedUpdated)
    assert Fallback.RANKER_TIMEOUT_CF in update.fallbacks  # a microsecond deadline
    assert update.model == "cf-1"
    reasons = {item.pin_id: item.reason for item in update.items}
    assert {reasons[p] for p in ("p2", "p3", "p4", "p5")} == {"cf"}  # bob's saves, by co-engagement
    assert reasons["hot"] == "trending"

    stack.drop_cached_feed("alice")
    before = {f: stack.fallbacks_counted(f) for f in (Fallback.RANKER_TIMEOUT_CF, Fallback.TRENDING_FILL)}
    served = stack.feed("alice")  # a miss: computed now, and the response says how
    assert not served["from_cache"]
    assert {"RANKER_TIMEOUT_CF", "TRENDING_FILL"} <= set(served["fallbacks"])
    for fallback, count in before.items():
        assert stack.fallbacks_counted(fallback) == count + 1


def test_redis_gone_serves_uncached_with_a_reconciliation_and_resumes(stack: Stack) -> None:
    uncached_before = stack.fallbacks_counted(Fallback.UNCACHED)
    stack.redis_server.stop()
    try:
        served = stack.feed("carol")
        assert "UNCACHED" in served["fallbacks"] and not served["from_cache"]
        assert served["items"], "the feed is computed and served all the same"
        assert stack.fallbacks_counted(Fallback.UNCACHED) > uncached_before
        record = wait_for(stack.worker.settings, RECONCILIATION.name,
                          lambda e: isinstance(e, Reconciliation) and e.entity_id == "carol")
        assert isinstance(record.value, Reconciliation)
        assert record.value.stage is Stage.FEED and record.value.dependency == "redis"
        assert record.value.entity_type == "user"
    finally:
        stack.redis_server.start()  # same port, empty

    def cached_again() -> bool:
        served = stack.feed("carol")
        return "UNCACHED" not in served["fallbacks"]

    eventually(cached_again)
    assert stack.feed("carol")["from_cache"] is True


def test_graph_store_gone_serves_cached_preferences_and_resumes(stack: Stack) -> None:
    # The preferences come with every cached ranking: make sure alice has a fresh one.
    stack.drop_cached_feed("alice")
    ranked = stack.feed("alice")
    assert "UNCACHED" not in ranked["fallbacks"]
    counted = stack.fallbacks_counted(Fallback.CACHED_PREFERENCES)
    stack.hbase.cut()
    try:
        stack.drop_cached_feed("alice")
        served = stack.feed("alice")
        assert "CACHED_PREFERENCES" in served["fallbacks"]
        preferred = {item["pin_id"] for item in served["items"] if item["reason"] == "prefs"}
        assert preferred & {"p2", "p3", "p4", "p5"}
        assert stack.fallbacks_counted(Fallback.CACHED_PREFERENCES) > counted
        # A new interaction cannot reach the graph: the graph stage holds its batch meanwhile.
        stack.interact([("alice", "p3", "click", None)])
    finally:
        stack.hbase.restore()

    # Once HBase answers, the held click is applied and alice's refresh comes from the graph
    # again: p3, clicked now, is no longer offered.
    update = wait_for(stack.worker.settings, FEEDS_UPDATED.name,
                      lambda e: isinstance(e, FeedUpdated) and e.user_id == "alice"
                      and "p3" not in {item.pin_id for item in e.items}).value
    assert isinstance(update, FeedUpdated)
    assert Fallback.CACHED_PREFERENCES not in update.fallbacks

    def graph_again() -> bool:
        stack.drop_cached_feed("alice")
        return "CACHED_PREFERENCES" not in stack.feed("alice")["fallbacks"]

    eventually(graph_again, timeout_s=60)
