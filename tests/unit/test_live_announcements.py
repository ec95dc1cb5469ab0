"""A live patch is timed when Redis has applied it; the patched feed is announced on
feeds.updated.v1 at most once per user per interval, read back whole from the cache."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from processors.feed_patch import PlannedPatch
from processors.interactions import InteractionStage
from processors.live_patches import FEED_LIVE_LAG, LIVE_ANNOUNCEMENTS
from sinks.redis import FeedPatch
from streams.codec import AvroCodec
from streams.events import FeedItem, FeedUpdated
from streams.settings import load_settings
from streams.topics import HEADER_FEED_CHANGE, HEADER_SOURCE_TIMESTAMP


class FakeCache:
    """Our FeedCache's live-patch interface: feeds of users in `cached`, one item each."""

    def __init__(self, cached: set[str]) -> None:
        self.cached = cached
        self.patched: list[list[str]] = []
        self.read: list[list[str]] = []

    def patch_feeds(self, patches: list[FeedPatch]) -> list[int | None]:
        self.patched.append([p.user_id for p in patches])
        return [1 if p.user_id in self.cached else None for p in patches]

    def read_feeds(self, users: list[str]) -> list[list[FeedItem] | None]:
        self.read.append(list(users))
        return [[FeedItem(f"best-of-{u}", 1.0, "live:x")] if u in self.cached else None for u in users]


class FakeProducer:
    def __init__(self) -> None:
        self.settings = load_settings()
        self.sent: list[tuple[str, Any, dict[str, bytes]]] = []

    def send_event(self, spec: Any, key: str, event: Any, *, headers: Any = ()) -> None:
        self.sent.append((key, event, dict(headers)))


def _stage(cache: FakeCache, producer: FakeProducer, interval_s: float) -> InteractionStage:
    unused: Any = object()
    feeds: Any = SimpleNamespace(computer=SimpleNamespace(params=SimpleNamespace(model="pixie")))
    return InteractionStage(graph=unused, feeds=feeds, cache=cache, producer=producer,  # type: ignore[arg-type]
                            emitter=unused, codec=AvroCodec(), refresh_interval_s=1.0,
                            live_announce_interval_s=interval_s)


def _planned(user: str, oldest_ms: int) -> PlannedPatch:
    return PlannedPatch(FeedPatch(user, remove=("p",)), oldest_ms)


def _lag_count() -> float:
    return next(s.value for s in FEED_LIVE_LAG.collect()[0].samples if s.name.endswith("_count"))


def test_patched_feeds_are_announced_once_per_user_per_interval() -> None:
    cache, producer = FakeCache({"alice", "bob"}), FakeProducer()
    stage = _stage(cache, producer, interval_s=0.4)
    announced_before = LIVE_ANNOUNCEMENTS._value.get()
    lag_before = _lag_count()
    now_ms = int(time.time() * 1000)

    async def scenario() -> None:
        runner = asyncio.get_running_loop().create_task(stage._run_patches())
        await stage._patch_queue.put([_planned("alice", now_ms - 30), _planned("carol", now_ms - 20)])
        await asyncio.sleep(0.05)
        await stage._patch_queue.put([_planned("alice", now_ms - 10), _planned("bob", now_ms - 5)])
        await asyncio.sleep(0.05)
        await stage._patch_queue.put([_planned("alice", now_ms)])
        await asyncio.sleep(0.6)  # alice's interval passes with nothing queued: announced anyway
        runner.cancel()

    asyncio.run(scenario())

    users = [key for key, _, _ in producer.sent]
    # alice at once, bob at once (never announced), alice again once her interval passed;
    # carol has no cached feed: nothing patched, nothing announced.
    assert users == ["alice", "bob", "alice"]
    assert all(isinstance(event, FeedUpdated) and event.model == "pixie+live"
               for _, event, _ in producer.sent)
    assert producer.sent[0][1].items == (FeedItem("best-of-alice", 1.0, "live:x"),)
    assert all(headers[HEADER_FEED_CHANGE] == b"live" for _, _, headers in producer.sent)
    # the second alice announcement covers her two later patches: stamped with the older one
    assert producer.sent[2][2][HEADER_SOURCE_TIMESTAMP] == str(now_ms - 10).encode()
    assert LIVE_ANNOUNCEMENTS._value.get() - announced_before == 3
    assert _lag_count() - lag_before == 4  # every patch that landed is timed, carol's is not
    assert "carol" not in {u for read in cache.read for u in read}
