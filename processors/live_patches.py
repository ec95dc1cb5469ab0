"""Live feed patches applied to the cached feeds and announced: the part shared by the interaction
stage (patches planned from its own graph rows) and the live patch process (rows kept beside it).

A patch is timed when Redis has applied it; a patched feed is announced on feeds.updated.v1 at
most once per user per interval, read back whole from the cache.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter, Histogram

from processors.feed_patch import PlannedPatch
from sinks.redis import FeedPatch
from streams.errors import PinstreamError
from streams.events import FeedItem, FeedUpdated
from streams.metrics import REGISTRY
from streams.topics import FEEDS_UPDATED, HEADER_FEED_CHANGE, HEADER_SOURCE_TIMESTAMP

# Fine buckets: `pinstream bench feed` reads its live-patch percentiles from this histogram.
LIVE_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0,
                    1.5, 2.5, 5.0, 10.0, 30.0)
FEED_LIVE_LAG = Histogram(
    "pinstream_feed_live_lag_seconds",
    "From the oldest interaction a live feed patch covers (its Kafka timestamp) to the patch "
    "applied in Redis.", buckets=LIVE_LAG_BUCKETS, registry=REGISTRY,
)
LIVE_ANNOUNCEMENTS = Counter(
    "pinstream_feed_live_announcements_total",
    "Live-patched feeds announced on feeds.updated.v1 (at most one per user per interval).",
    registry=REGISTRY,
)
log = logging.getLogger(__name__)

LIVE_ANNOUNCE_MAX = 100  # live-patched feeds read back and announced per round


@dataclass
class RefreshPlan:
    """Users whose feed must be recomputed (or announced), each with the Kafka timestamp (ms) of
    the oldest interaction not yet covered (None if unknown), and when each was last done."""

    interval_s: float
    dirty: dict[str, int | None] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)

    def mark(self, user_id: str, timestamp_ms: int | None) -> None:
        if user_id not in self.dirty:
            self.dirty[user_id] = timestamp_ms
        elif timestamp_ms is not None:
            oldest = self.dirty[user_id]
            self.dirty[user_id] = timestamp_ms if oldest is None else min(oldest, timestamp_ms)

    def due(self, now: float, limit: int) -> dict[str, int | None]:
        """The users to refresh now (at most `limit`), each with its oldest pending timestamp."""
        ready = [u for u in self.dirty if now - self.last.get(u, 0.0) >= self.interval_s][:limit]
        taken = {user: self.dirty.pop(user) for user in ready}
        for user in ready:
            self.last[user] = now
        if len(self.last) > 100_000:  # bounded: forget the oldest refresh times
            for user, _ in sorted(self.last.items(), key=lambda kv: kv[1])[:50_000]:
                del self.last[user]
        return taken


class LiveFeedCache(Protocol):
    """What live patches need of the feed cache (sinks.redis.FeedCache in production)."""

    def patch_feeds(self, patches: list[FeedPatch]) -> list[int | None]: ...

    def read_feeds(self, users: list[str]) -> list[list[FeedItem] | None]: ...


class FeedSender(Protocol):
    def send_event(self, spec: Any, key: str, event: Any, *, headers: Any = ()) -> None: ...


def feed_headers(change: bytes, oldest_ms: int | None) -> list[tuple[str, bytes]]:
    """A FeedUpdated's headers: how the feed changed and, when known, the Kafka timestamp of the
    oldest interaction it covers (downstream, and `pinstream bench feed`, can tell its freshness)."""
    headers = [(HEADER_FEED_CHANGE, change)]
    if oldest_ms is not None:
        headers.append((HEADER_SOURCE_TIMESTAMP, str(oldest_ms).encode()))
    return headers


class LivePatcher:
    """Applies planned patches in one Redis call, times them, and announces the patched feeds
    that are due. Thread-safe: patches and announcements may run in different threads."""

    def __init__(self, cache: LiveFeedCache, producer: FeedSender, *, model: str,
                 announce_interval_s: float) -> None:
        self.cache = cache
        self.producer = producer
        self.model = f"{model}+live"
        self.live = RefreshPlan(announce_interval_s)
        self._lock = threading.Lock()

    def apply(self, planned: Sequence[PlannedPatch]) -> list[float] | None:
        """Patch the feeds; returns the lag of each patch that landed, also observed in
        `pinstream_feed_live_lag_seconds`. None when Redis failed: only logged, since the users
        are marked stale and their re-rank still comes."""
        try:
            sizes = self.cache.patch_feeds([p.patch for p in planned])
        except PinstreamError as exc:
            log.warning("live feed patches not applied (the re-rank will come): %s", exc)
            return None
        return self.patched(planned, sizes)

    def patched(self, planned: Sequence[PlannedPatch], sizes: Sequence[int | None]) -> list[float]:
        written_ms = time.time() * 1000
        lags = []
        with self._lock:
            for item, size in zip(planned, sizes, strict=True):
                if size is None:  # no feed cached: nothing patched (the re-rank writes one)
                    continue
                if item.oldest_ms is not None:
                    lag = max(0.0, written_ms - item.oldest_ms) / 1000
                    FEED_LIVE_LAG.observe(lag)
                    lags.append(lag)
                self.live.mark(item.patch.user_id, item.oldest_ms)
        return lags

    def announce_due(self, limit: int = LIVE_ANNOUNCE_MAX) -> int:
        """Publish up to `limit` live-patched feeds that are due as FeedUpdated (model
        `<ranker>+live`); returns how many. When the feeds cannot be read back it only logs: the
        users' re-ranks are announced anyway."""
        with self._lock:
            due = self.live.due(time.monotonic(), limit)
        if not due:
            return 0
        users = list(due)
        try:
            feeds = self.cache.read_feeds(users)
        except PinstreamError as exc:
            log.warning("live-patched feeds not announced: %s", exc)
            return 0
        announced = 0
        for user, feed in zip(users, feeds, strict=True):
            if feed is not None:
                event = FeedUpdated(user_id=user, items=tuple(feed), model=self.model)
                self.producer.send_event(FEEDS_UPDATED, user, event, headers=feed_headers(b"live", due[user]))
                announced += 1
        LIVE_ANNOUNCEMENTS.inc(announced)
        return announced
