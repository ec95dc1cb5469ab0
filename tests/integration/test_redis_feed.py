"""The Redis feed cache against the real server: atomic replacement under concurrent readers, TTL,
targeted invalidation, trending decay, pool usage, and a Redis stop and restart in one process."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from processors.feed import FeedComputer, FeedParams, FeedService, Neighbours
from processors.ranking import RankParams
from processors.walks import WalkParams
from sinks.pool import PoolConfig
from sinks.redis import FeedCache, FeedPatch, redis_pool
from streams import stack
from streams.errors import SinkError
from streams.events import Fallback, FeedItem, FeedUpdated, InteractionAction, NodeType, PinInteraction
from streams.metrics import REGISTRY
from streams.settings import Settings
from streams.stack import ServiceState

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix() -> str:
    return f"test-feed-{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def raw(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)
    finally:
        client.close()


def make_cache(settings: Settings, prefix: str, **kwargs: Any) -> FeedCache:
    config = PoolConfig(name=f"redis-{prefix}", dependency="redis", max_size=4, acquire_timeout_s=1.0)
    return FeedCache(redis_pool(settings.redis_url, config, timeout_s=1.0), key_prefix=prefix,
                     feed_ttl_s=settings.feed_ttl_s, **kwargs)


@pytest.fixture
def cache(stack_settings: Settings, prefix: str, raw: redis.Redis) -> Iterator[FeedCache]:
    feeds = make_cache(stack_settings, prefix)
    yield feeds
    feeds.close()


def feed(user: str, pins: Sequence[str], tag: str = "walk:board b1") -> FeedUpdated:
    return FeedUpdated(user_id=user, items=tuple(FeedItem(pin, float(len(pins) - i), tag)
                                                 for i, pin in enumerate(pins)), model="test")


def in_use(cache: FeedCache) -> float | None:
    return REGISTRY.get_sample_value("pinstream_pool_in_use", {"pool": cache.pool.config.name})


def test_feeds_are_written_capped_with_reasons_and_a_ttl(cache: FeedCache, raw: redis.Redis) -> None:
    cache.write_feeds([feed("u1", [f"p{i}" for i in range(250)]), feed("u2", ["x", "y"], "trending")],
                      {"u1": [("p1", 2.0), ("p9", 1.0)]})

    page = cache.read_feed("u1", offset=1, count=2)
    assert page == [FeedItem("p1", 249.0, "walk:board b1"), FeedItem("p2", 248.0, "walk:board b1")]
    assert len(cache.read_feed("u1") or []) == 200  # the top 200 of 250
    assert cache.read_feed("u2") == [FeedItem("x", 2.0, "trending"), FeedItem("y", 1.0, "trending")]
    assert cache.read_feed("nobody") is None
    assert 0 < raw.ttl(cache.feed_key("u1")) <= 900
    assert 0 < raw.ttl(cache.reasons_key("u1")) <= 900
    assert raw.ttl(cache.prefs_key("u1")) > 900
    assert cache.preferences("u1") == [("p1", 2.0), ("p9", 1.0)]


def test_several_feeds_read_in_one_call_are_each_whole_with_reasons(cache: FeedCache,
                                                                    raw: redis.Redis) -> None:
    cache.write_feeds([feed("u1", [f"p{i}" for i in range(200)]), feed("u3", ["x", "y"], "trending")])
    raw.hdel(cache.reasons_key("u3"), "y")  # a pin whose reason went missing reads as no reason

    u1, nobody, u3 = cache.read_feeds(["u1", "nobody", "u3"])
    assert nobody is None
    assert u1 is not None and len(u1) == 200
    assert u1[0] == FeedItem("p0", 200.0, "walk:board b1")
    assert u1[-1] == FeedItem("p199", 1.0, "walk:board b1")
    assert u3 == [FeedItem("x", 2.0, "trending"), FeedItem("y", 1.0, "")]
    assert cache.read_feed("u3", offset=5) == []  # past the end of a cached feed: empty, not None
    assert cache.read_feeds([]) == []


def test_a_reader_never_sees_a_half_written_feed(cache: FeedCache) -> None:
    first = [f"a{i}" for i in range(200)]
    second = [f"b{i}" for i in range(150)]
    cache.write_feeds([feed("u1", first)])
    stop = threading.Event()
    problems: list[str] = []
    reads = 0

    def read_until_stopped() -> None:
        nonlocal reads
        while not stop.is_set():
            items = cache.read_feed("u1")
            reads += 1
            pins = [item.pin_id for item in items or []]
            if pins not in (first, second) or any(not item.reason for item in items or []):
                problems.append(f"{len(pins)} pins: {pins[:3]}...")

    reader = threading.Thread(target=read_until_stopped)
    reader.start()
    try:
        for round_ in range(60):
            cache.write_feeds([feed("u1", second if round_ % 2 == 0 else first)])
    finally:
        stop.set()
        reader.join(10)
    assert reads > 10
    assert not problems, problems[:3]


def test_remove_pin_drops_it_from_the_feed_and_preferences_at_once(cache: FeedCache) -> None:
    cache.write_feeds([feed("u1", ["p1", "p2", "p3"])], {"u1": [("p2", 1.0), ("p4", 0.5)]})

    assert cache.remove_pin("u1", "p2") is True
    assert [i.pin_id for i in cache.read_feed("u1") or []] == ["p1", "p3"]
    assert cache.preferences("u1") == [("p4", 0.5)]
    assert cache.remove_pin("u1", "p2") is False


def test_a_hide_through_the_service_removes_the_pin_from_the_cached_feed(cache: FeedCache) -> None:
    params = FeedParams(rank=RankParams(size=5), walk=WalkParams(steps=2000))
    computer = FeedComputer(StaticGraph(), trending=cache, preferences=cache, params=params)
    service = FeedService(computer, cache)
    shown = service.read("u1")
    hidden = shown.items[0].pin_id
    cache.remove_pin("u1", hidden)
    again = service.read("u1")

    assert not shown.from_cache and again.from_cache
    assert hidden not in {item.pin_id for item in again.items}
    assert len(again.items) == len(shown.items) - 1


def test_trending_orders_by_decayed_popularity(stack_settings: Settings, prefix: str,
                                               raw: redis.Redis) -> None:
    now = datetime.now(UTC)
    cache = make_cache(stack_settings, prefix, trending_half_life_s=3600.0, clock=now.timestamp)

    def saves(pin: str, times: int, hours_ago: float) -> list[PinInteraction]:
        return [PinInteraction(user_id="u", pin_id=pin, action=InteractionAction.SAVE, session_id="s",
                               event_time=now - timedelta(hours=hours_ago)) for _ in range(times)]

    try:
        cache.add_interactions(saves("old", 10, 3))  # 10 saves, 3 half-lives ago: worth 1.25 saves now
        cache.add_interactions([*saves("new", 2, 0), *saves("mid", 3, 1),
                                PinInteraction(user_id="u", pin_id="hated", action=InteractionAction.HIDE,
                                               session_id="s", event_time=now)])
        ranked = cache.trending(10)
        assert [pin for pin, _ in ranked] == ["new", "mid", "old", "hated"]
        assert dict(ranked)["new"] == pytest.approx(8.0, rel=1e-3)
        assert dict(ranked)["old"] == pytest.approx(10 * 4 / 8, rel=1e-3)
        assert dict(ranked)["hated"] < 0
        # 100 half-lives later the scores are rescaled to a new reference, the order is unchanged.
        later = now + timedelta(hours=100)
        cache.clock = later.timestamp
        cache.add_interactions([PinInteraction(user_id="u", pin_id="fresh", action=InteractionAction.CLICK,
                                               session_id="s", event_time=later)])
        assert [pin for pin, _ in cache.trending(3)] == ["fresh", "new", "mid"]
        assert cache.trending(1)[0][1] == pytest.approx(1.0)
    finally:
        cache.close()


def test_pool_usage_is_exported_and_returns_to_zero(cache: FeedCache) -> None:
    cache.ping()
    assert in_use(cache) == 0
    lease = cache.pool.acquire()
    try:
        assert in_use(cache) == 1
    finally:
        lease.release()
    cache.write_feeds([feed("u1", ["p1"])])
    assert in_use(cache) == 0
    assert REGISTRY.get_sample_value("pinstream_pool_idle", {"pool": cache.pool.config.name}) == 1
    assert REGISTRY.get_sample_value("pinstream_pool_max", {"pool": cache.pool.config.name}) == 4


class StaticGraph:
    """A fixed little graph (the feed's graph-reader protocol) for tests that need a real cache."""

    rows: dict[NodeType, dict[str, dict[NodeType, dict[str, float]]]] = {
        NodeType.USER: {"u1": {NodeType.PIN: {"q": 4.0}}},
        NodeType.PIN: {"q": {NodeType.BOARD: {"b1": 1.0}}},
        NodeType.BOARD: {"b1": {NodeType.PIN: {"q": 1.0, **{f"p{i}": 1.0 + i for i in range(8)}}}},
    }

    def neighbours(self, node_type: NodeType, node_ids: Sequence[str]) -> dict[str, Neighbours]:
        return {n: self.rows[node_type][n] for n in node_ids if n in self.rows[node_type]}


def test_redis_stopped_is_a_sink_error_and_service_resumes_after_a_restart(
        cache: FeedCache, stack_settings: Settings) -> None:
    if stack.status(["redis"], settings=stack_settings)[0].state is ServiceState.EXTERNAL:
        pytest.fail("redis on 6379 was not started by the stack; stop it to test restarts")
    cache.write_feeds([feed("u1", ["p1", "p2"])])
    service = FeedService(FeedComputer(StaticGraph(), params=FeedParams(rank=RankParams(size=3),
                                                                        walk=WalkParams(steps=2000))), cache)
    leaks_before = REGISTRY.get_sample_value("pinstream_pool_leaks_total",
                                             {"pool": cache.pool.config.name}) or 0
    try:
        stack.down(["redis"], settings=stack_settings)
        for call in (lambda: cache.read_feed("u1"), lambda: cache.write_feeds([feed("u1", ["p3"])]),
                     lambda: cache.trending(5), cache.ping):
            started = time.monotonic()
            with pytest.raises(SinkError) as caught:
                call()
            assert time.monotonic() - started < 3.0
            assert caught.value.dependency == "redis" and caught.value.retry_after
            assert cache.pool.stats().in_use == 0
        served = service.read("u1")
        assert served.fallbacks == (Fallback.NO_EMBEDDINGS, Fallback.UNCACHED)
        assert served.needs_reconciliation
        assert [item.pin_id for item in served.items] == ["p7", "p6", "p5"]
    finally:
        stack.up(["redis"], settings=stack_settings)

    # Same process, same cache: the pool replaces its dead connections by itself.
    cache.write_feeds([feed("u1", ["p3"])])
    assert cache.read_feed("u1") == [FeedItem("p3", 1.0, "walk:board b1")]
    resumed = service.read("u1")
    assert resumed.from_cache and resumed.fallbacks == ()
    assert cache.pool.stats().in_use == 0
    assert (REGISTRY.get_sample_value("pinstream_pool_leaks_total", {"pool": cache.pool.config.name})
            or 0) == leaks_before


def test_stale_marks_stay_until_a_feed_computed_after_them_is_written(
        cache: FeedCache, raw: redis.Redis) -> None:
    cache.record_batch(["u1", "u2", "u3"], (), ())
    assert sorted(cache.stale_users(10)) == ["u1", "u2", "u3"]
    marked_at = time.time()
    # A feed computed before the mark does not clear it; one computed after does.
    assert cache.clear_stale(["u1"], computed_at=marked_at - 60) == 0
    assert cache.clear_stale(["u1", "u2"], computed_at=marked_at + 1) == 2
    assert cache.stale_users(10) == ["u3"]
    time.sleep(0.01)
    cache.record_batch(["u3"], (), ())  # marked again while its refresh was computing: stays marked
    assert cache.clear_stale(["u3"], computed_at=marked_at) == 0
    assert cache.stale_users(10) == ["u3"] and raw.zcard(cache.stale_key) == 1
    assert cache.clear_stale([], computed_at=time.time()) == 0


def test_a_live_patch_removes_lifts_and_trims_the_feed(cache: FeedCache, raw: redis.Redis) -> None:
    cache.write_feeds([feed("u1", [f"p{i}" for i in range(200)])])  # scores 200 .. 1
    ttl_before = raw.pttl(cache.feed_key("u1"))

    patched = cache.patch_feeds([
        FeedPatch("u1", remove=("p0",), lift=(("new", 1.0, "live:p0"), ("new2", 0.75, "live:p0"),
                                                   ("p150", 0.5, "live:p0"))),
        FeedPatch("nobody", remove=("p1",), lift=(("new", 1.0, "live:p1"),)),
    ])

    assert patched == [200, None]  # no feed cached for "nobody": nothing written for it
    assert not raw.exists(cache.feed_key("nobody"))
    items, nobody = cache.read_feeds(["u1", "nobody"])
    assert items is not None and nobody is None
    assert items[:4] == [FeedItem("new", 200.0, "live:p0"), FeedItem("new2", 199.75, "live:p0"),
                         FeedItem("p150", 199.5, "live:p0"), FeedItem("p1", 199.0, "walk:board b1")]
    assert len(items) == 200
    assert "p0" not in {item.pin_id for item in items}
    assert items[-1].pin_id == "p198"  # 200 - 1 + 2 new: p199, the lowest, trimmed to keep 200
    assert cache.read_feed("u1") == items  # both reads see the same feed and reasons
    assert not raw.hexists(cache.reasons_key("u1"), "p199")
    assert 0 < raw.pttl(cache.feed_key("u1")) <= ttl_before  # a patch does not extend the TTL


def test_a_live_patch_reloads_its_script_after_a_script_flush(
        cache: FeedCache, raw: redis.Redis) -> None:
    cache.write_feeds([feed("u1", ["a", "b"])])
    raw.script_flush()

    patched = cache.patch_feeds([FeedPatch("u1", lift=(("c", 0.25, "live:a"),))])
    feeds = cache.read_feeds(["u1"])

    assert patched == [3]
    assert [item.pin_id for item in feeds[0] or []] == ["c", "a", "b"]


def test_a_batch_marks_users_stale_folds_trending_and_removes_hides_in_one_call(
        cache: FeedCache, raw: redis.Redis) -> None:
    cache.write_feeds([feed("u1", ["a", "b", "c"])], {"u1": [("b", 1.0), ("c", 0.5)]})
    now = datetime.now(UTC)
    events = [PinInteraction(user_id="u1", pin_id="b", action=InteractionAction.HIDE, session_id="s",
                             event_time=now),
              PinInteraction(user_id="u2", pin_id="z", action=InteractionAction.SAVE, session_id="s",
                             event_time=now)]
    raw.script_flush()  # the trending script is loaded again within the same call

    cache.record_batch(["u1", "u2"], events, [("u1", "b")])

    assert set(cache.stale_users(10)) == {"u1", "u2"}
    assert cache.trending(5)[0][0] == "z"
    assert [item.pin_id for item in cache.read_feed("u1") or []] == ["a", "c"]
    assert not raw.hexists(cache.reasons_key("u1"), "b")
    assert cache.preferences("u1") == [("c", 0.5)]


def test_namespaces_sharing_one_redis_keep_their_feeds_and_trending_apart(
        stack_settings: Settings, prefix: str, raw: redis.Redis) -> None:
    # `raw` deletes every key under `prefix` afterwards: both namespaces live below it.
    one, two = (FeedCache.from_settings(stack_settings.model_copy(update={"topic_prefix": f"{prefix}{ns}."}))
                for ns in ("one", "two"))
    saved = PinInteraction(event_id=uuid.uuid4(), event_time=datetime.now(UTC), user_id="alice",
                           pin_id="p-one", action=InteractionAction.SAVE, session_id="s", board_id="b")
    try:
        one.write_feeds([feed("alice", ["p-one"])])
        one.record_batch(["alice"], [saved], [])
        assert one.read_feed("alice") is not None
        assert two.read_feed("alice") is None  # the other namespace's alice has no feed
        assert [pin for pin, _ in one.trending(5)] == ["p-one"]
        assert two.trending(5) == []
        assert one.feed_key("alice") == f"{prefix}one.feed:alice"
    finally:
        raw.delete(one.stale_key, two.stale_key)  # named as before namespaced keys: not under it
        one.close()
        two.close()
