"""Home feeds, trending pins and cached preferences in Redis, through the bounded connection pool:
one pipeline per batch, feeds replaced atomically, every failure a SinkError(dependency="redis")."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from prometheus_client import Counter, Histogram
from redis.backoff import NoBackoff
from redis.retry import Retry

from sinks.pool import ConnectionPool, PoolConfig
from streams.errors import ConfigError, SinkError
from streams.events import FeedItem, FeedUpdated, InteractionAction, PinInteraction
from streams.metrics import REGISTRY
from streams.settings import Settings

T = TypeVar("T")
Client = redis.Redis
Scores = Sequence[tuple[str, float]]

DEPENDENCY = "redis"
RETRY_AFTER_S = 1.0
# What an interaction adds to a pin's popularity; an impression is exposure, not popularity.
TRENDING_WEIGHTS: Mapping[InteractionAction, float] = {
    InteractionAction.CLICK: 1.0, InteractionAction.CLOSEUP: 2.0, InteractionAction.SAVE: 4.0,
    InteractionAction.HIDE: -8.0,
}

REDIS_SECONDS = Histogram(
    "pinstream_redis_seconds", "Duration of one feed-cache call (borrow, round trip, decode).", ["op"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
REDIS_ERRORS = Counter("pinstream_redis_errors_total",
                       "Feed-cache calls that failed, by operation and error type.", ["op", "error"],
                       registry=REGISTRY)

# Trending scores are stored as sum(w * 2^((t - ref) / half-life)): adding a newer event never
# touches older scores, and every score decays alike, so the order is the decayed popularity.
# Scores grow with t, so past 64 half-lives the set is rescaled and `ref` moves up (atomically).
_TRENDING_ADD = """
local half_life = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local newest = tonumber(ARGV[3])
local ref = tonumber(redis.call('GET', KEYS[2]))
if ref == nil then
  ref = newest
  redis.call('SET', KEYS[2], ref)
elseif (newest - ref) / half_life > 64 then
  redis.call('ZUNIONSTORE', KEYS[1], 1, KEYS[1], 'WEIGHTS', 2 ^ ((ref - newest) / half_life))
  ref = newest
  redis.call('SET', KEYS[2], ref)
end
local scale = 2 ^ ((newest - ref) / half_life)
for i = 4, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], tonumber(ARGV[i + 1]) * scale, ARGV[i])
end
local size = redis.call('ZCARD', KEYS[1])
if size > keep then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, size - keep - 1)
end
return ref
"""
_TRENDING_ADD_SHA1 = hashlib.sha1(_TRENDING_ADD.encode(), usedforsecurity=False).hexdigest()

# Unmark users whose feed was written from a state at least as new as their mark; a user marked
# again meanwhile (a newer score) stays marked.
_STALE_CLEAR = """
local cleared = 0
for i = 1, #ARGV - 1 do
  local marked = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if marked and tonumber(marked) <= tonumber(ARGV[#ARGV]) then
    cleared = cleared + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return cleared
"""


# A live patch of one cached feed (KEYS: feed, reasons; ARGV: size, removals, then the removed
# pins, then pin/share/reason triples). Nothing happens to a feed that is not cached (the next full
# refresh writes it). Lifted pins go above the feed's best score by their share, so the feed stays
# ordered by strength; it is trimmed back to `size`. Returns the feed's new size.
_FEED_PATCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local size, removals = tonumber(ARGV[1]), tonumber(ARGV[2])
local i = 3
for _ = 1, removals do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
  i = i + 1
end
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local base = 0
if #top > 0 then base = tonumber(top[2]) end
while i + 2 <= #ARGV do
  local score = base + tonumber(ARGV[i + 1])
  local current = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if (not current) or tonumber(current) < score then
    redis.call('ZADD', KEYS[1], score, ARGV[i])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  end
  i = i + 3
end
local extra = redis.call('ZCARD', KEYS[1]) - size
if extra > 0 then
  for _, pin in ipairs(redis.call('ZRANGE', KEYS[1], 0, extra - 1)) do
    redis.call('HDEL', KEYS[2], pin)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
end
return redis.call('ZCARD', KEYS[1])
"""
_FEED_PATCH_SHA1 = hashlib.sha1(_FEED_PATCH.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class FeedPatch:
    """Pins to take out of a user's cached feed, and pins to lift to its top (share in (0, 1])."""

    user_id: str
    remove: tuple[str, ...] = ()
    lift: tuple[tuple[str, float, str], ...] = ()  # pin, share, reason


class FeedCache:
    """`feed:<user>` sorted sets (reasons in `feedr:<user>`), `prefs:<user>` and `trending`, keys
    prefixed with `key_prefix`; each call borrows one pooled connection for one round trip."""

    def __init__(self, pool: ConnectionPool[Client], *, key_prefix: str = "", feed_size: int = 200,
                 feed_ttl_s: int = 900, prefs_ttl_s: int = 7 * 86_400,
                 trending_half_life_s: float = 6 * 3600.0, trending_max_pins: int = 10_000,
                 trending_weights: Mapping[InteractionAction, float] = TRENDING_WEIGHTS,
                 clock: Callable[[], float] = time.time, stale_key: str | None = None) -> None:
        if feed_size < 1 or feed_ttl_s < 1 or prefs_ttl_s < 1 or trending_max_pins < 1:
            raise ConfigError("feed size, TTLs and trending_max_pins must be >= 1")
        if trending_half_life_s <= 0:
            raise ConfigError("the trending half-life must be > 0")
        self.pool = pool
        self.prefix = key_prefix
        self.feed_size = feed_size
        self.feed_ttl_s = feed_ttl_s
        self.prefs_ttl_s = prefs_ttl_s
        self.half_life_ms = trending_half_life_s * 1000
        self.trending_max_pins = trending_max_pins
        self.trending_weights = dict(trending_weights)
        self.clock = clock
        self.trending_key = f"{key_prefix}trending"
        self.trending_ref_key = f"{key_prefix}trending:ref"
        # Users whose feed must be refreshed (scored by when they were marked): written before
        # their interactions are acknowledged, so a worker that dies before the refresh leaves
        # the work here for the next one.
        self.stale_key = stale_key or f"{key_prefix}feeds:stale"

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_s: float = 2.0,
                      pool_config: PoolConfig | None = None) -> FeedCache:
        """Keys prefixed with the namespace's topic prefix: two namespaces sharing one Redis keep
        their feeds, preferences and trending apart (with no prefix, the keys are the plain ones)."""
        config = pool_config or PoolConfig(name="redis-feeds", dependency=DEPENDENCY,
                                           max_size=settings.redis_pool_size, acquire_timeout_s=timeout_s)
        return cls(redis_pool(settings.redis_url, config, timeout_s=timeout_s),
                   key_prefix=settings.topic_prefix, feed_size=settings.feed_size,
                   feed_ttl_s=settings.feed_ttl_s, prefs_ttl_s=settings.feed_prefs_ttl_s,
                   trending_half_life_s=settings.trending_half_life_s,
                   trending_max_pins=settings.trending_max_pins,
                   # named as before namespaced keys, so marks left by an older worker are found
                   stale_key=f"feeds:stale:{settings.topic_prefix}")

    def feed_key(self, user_id: str) -> str:
        return f"{self.prefix}feed:{user_id}"

    def reasons_key(self, user_id: str) -> str:
        return f"{self.prefix}feedr:{user_id}"

    def prefs_key(self, user_id: str) -> str:
        return f"{self.prefix}prefs:{user_id}"

    # --- the sink contract ------------------------------------------------------------------

    def write_batch(self, items: Sequence[FeedUpdated]) -> None:
        self.write_feeds(items)

    def flush(self) -> None:
        """Nothing to do: every write returns once Redis has executed it."""

    def close(self) -> None:
        self.pool.close()

    # --- feeds --------------------------------------------------------------------------------

    def write_feeds(self, feeds: Sequence[FeedUpdated], preferences: Mapping[str, Scores] | None = None
                    ) -> None:
        """Replace each user's feed (top `feed_size`, TTL) and cached preferences, all in one
        MULTI/EXEC: a reader sees each feed whole, old or new, never half written."""
        if not feeds and not preferences:
            return

        def write(conn: Client) -> None:
            pipe = conn.pipeline(transaction=True)
            for feed in feeds:
                key, reasons = self.feed_key(feed.user_id), self.reasons_key(feed.user_id)
                pipe.delete(key, reasons)
                items = sorted(feed.items, key=lambda item: -item.score)[:self.feed_size]
                if items:
                    pipe.zadd(key, {item.pin_id: item.score for item in items})
                    pipe.hset(reasons, mapping={item.pin_id: item.reason for item in items})
                    pipe.expire(key, self.feed_ttl_s)
                    pipe.expire(reasons, self.feed_ttl_s)
            for user_id, scores in (preferences or {}).items():
                key = self.prefs_key(user_id)
                pipe.delete(key)
                if scores:
                    pipe.zadd(key, dict(scores))
                    pipe.expire(key, self.prefs_ttl_s)
            pipe.execute()

        self._call("write_feeds", write)

    def read_feed(self, user_id: str, offset: int = 0, count: int | None = None) -> list[FeedItem] | None:
        """Items `offset`.. (best first) of the cached feed, or None when none is cached."""
        if offset < 0 or (count is not None and count < 0):
            raise ValueError("offset and count must be >= 0")
        if count == 0:
            return []
        end = -1 if count is None else offset + count - 1

        return self._call("read_feed", lambda conn: self._read_feeds(conn, [user_id], offset, end)[0])

    def patch_feeds(self, patches: Sequence[FeedPatch]) -> list[int | None]:
        """Apply live patches in order, one atomic script call each, all in one pipeline; returns
        each patched feed's size, None where no feed was cached (nothing written there). The feeds
        themselves are not sent back: `read_feeds` reads the ones that are announced."""
        calls = []
        for item in patches:
            args: list[str | float | int] = [self.feed_size, len(item.remove), *item.remove]
            for pin, share, reason in item.lift:
                args.extend((pin, repr(share), reason))
            calls.append(((self.feed_key(item.user_id), self.reasons_key(item.user_id)), args))
        replies = self._call("patch_feeds",
                             lambda conn: _run_script(conn, _FEED_PATCH, _FEED_PATCH_SHA1, calls))
        return [None if reply is None else int(reply) for reply in replies]

    def read_feeds(self, users: Sequence[str]) -> list[list[FeedItem] | None]:
        """Each user's whole cached feed (best first), None where none is cached; one round trip."""
        if not users:
            return []
        return self._call("read_feeds", lambda conn: self._read_feeds(conn, users, 0, -1))

    def _read_feeds(self, conn: Client, users: Sequence[str], start: int, end: int
                    ) -> list[list[FeedItem] | None]:
        """Items `start`..`end` of each user's feed, with their reasons, all in one MULTI/EXEC:
        each set and its reasons from one moment."""
        pipe = conn.pipeline(transaction=True)
        for user in users:
            pipe.exists(self.feed_key(user))
            pipe.zrevrange(self.feed_key(user), start, end, withscores=True)
            pipe.hgetall(self.reasons_key(user))
        replies = pipe.execute()
        feeds: list[list[FeedItem] | None] = []
        for i in range(0, len(replies), 3):
            exists, ranked, reasons = replies[i:i + 3]
            feeds.append([FeedItem(pin.decode(), float(score), reasons.get(pin, b"").decode())
                          for pin, score in ranked] if exists else None)
        return feeds

    def remove_pin(self, user_id: str, pin_id: str) -> bool:
        """Drop a hidden or deleted pin from the user's cached feed and preferences now; True if
        the feed held it."""

        def remove(conn: Client) -> bool:
            pipe = conn.pipeline(transaction=True)
            pipe.zrem(self.feed_key(user_id), pin_id)
            pipe.hdel(self.reasons_key(user_id), pin_id)
            pipe.zrem(self.prefs_key(user_id), pin_id)
            removed, _, _ = pipe.execute()
            return bool(removed)

        return self._call("remove_pin", remove)

    def preferences(self, user_id: str) -> list[tuple[str, float]]:
        """The cached preferences (pins and scores of the last full ranking), best first."""

        def read(conn: Client) -> list[tuple[str, float]]:
            return _decoded(conn.zrevrange(self.prefs_key(user_id), 0, -1, withscores=True))

        return self._call("preferences", read)

    # --- feeds owed a refresh ----------------------------------------------------------------

    def clear_stale(self, users: Sequence[str], *, computed_at: float) -> int:
        """Unmark users whose feeds were written from state read at `computed_at` (epoch s) or
        later; returns how many were unmarked."""
        if not users:
            return 0
        return int(self._call("clear_stale", lambda conn: conn.eval(
            _STALE_CLEAR, 1, self.stale_key, *users, _ms(computed_at))))

    def stale_users(self, limit: int) -> list[str]:
        """Up to `limit` users still owed a refresh, longest waiting first."""
        members = self._call("stale_users", lambda conn: conn.zrange(self.stale_key, 0, limit - 1))
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    # --- trending -----------------------------------------------------------------------------

    def add_interactions(self, events: Sequence[PinInteraction]) -> None:
        """Fold a batch of interactions into the decayed popularity set, in one script call."""
        self.record_batch((), events, ())

    def record_batch(self, stale_users: Iterable[str], events: Sequence[PinInteraction],
                     hidden: Sequence[tuple[str, str]]) -> None:
        """What one interaction batch owes Redis, in one round trip and in this order: the users'
        stale marks (the durable record of the refreshes owed), the events folded into trending
        (one script call), and each hidden (user, pin) taken out of that user's feed and
        preferences. Each step is idempotent but trending: a failed script is retried alone."""
        now = _ms(self.clock())
        marks = {user: now for user in stale_users}
        trending = self._trending_args(events)
        if not marks and trending is None and not hidden:
            return
        keys = (self.trending_key, self.trending_ref_key)

        def record(conn: Client) -> None:
            pipe = conn.pipeline(transaction=False)
            if marks:
                pipe.zadd(self.stale_key, marks)
            if trending is not None:  # the digest: the script's text crosses once per server start
                pipe.evalsha(_TRENDING_ADD_SHA1, len(keys), *keys, *trending)
            for user_id, pin_id in hidden:
                pipe.zrem(self.feed_key(user_id), pin_id)
                pipe.hdel(self.reasons_key(user_id), pin_id)
                pipe.zrem(self.prefs_key(user_id), pin_id)
            replies = pipe.execute(raise_on_error=False)
            failed = [reply for reply in replies if isinstance(reply, Exception)]
            if any(isinstance(reply, redis.exceptions.NoScriptError) for reply in failed) and trending:
                conn.eval(_TRENDING_ADD, len(keys), *keys, *trending)
                failed = [reply for reply in failed if not isinstance(reply, redis.exceptions.NoScriptError)]
            if failed:
                raise failed[0]

        self._call("record_batch", record)

    def _trending_args(self, events: Sequence[PinInteraction]) -> list[str | float | int] | None:
        """The trending script's arguments for these events (None when none weighs anything)."""
        weighted = [(e.pin_id, self.trending_weights.get(e.action, 0.0), _ms(e.event_time.timestamp()))
                    for e in events]
        weighted = [item for item in weighted if item[1]]
        if not weighted:
            return None
        newest = max(at for _, _, at in weighted)
        by_pin: dict[str, float] = {}
        for pin, weight, at in weighted:  # decayed to the batch's newest event: one entry per pin
            by_pin[pin] = by_pin.get(pin, 0.0) + weight * 2.0 ** ((at - newest) / self.half_life_ms)
        args: list[str | float | int] = [self.half_life_ms, self.trending_max_pins, newest]
        for pin, weight in by_pin.items():
            args.extend((pin, repr(weight)))
        return args

    def trending(self, limit: int) -> list[tuple[str, float]]:
        """The `limit` most popular pins now, with their popularity decayed to now."""
        if limit <= 0:
            return []

        def read(conn: Client) -> list[tuple[str, float]]:
            pipe = conn.pipeline(transaction=True)
            pipe.get(self.trending_ref_key)
            pipe.zrevrange(self.trending_key, 0, limit - 1, withscores=True)
            ref, ranked = pipe.execute()
            if ref is None:
                return []
            scale = 2.0 ** ((float(ref) - _ms(self.clock())) / self.half_life_ms)
            return [(pin, score * scale) for pin, score in _decoded(ranked)]

        return self._call("trending", read)

    # --- health and the boundary ------------------------------------------------------------

    def ping(self) -> None:
        """A round trip through the pool; raises SinkError when Redis does not answer."""
        self._call("ping", lambda conn: conn.ping())

    def _call(self, op: str, work: Callable[[Client], T]) -> T:
        started = time.perf_counter()
        try:
            with self.pool.connection() as conn:
                result = work(conn)
        except (redis.RedisError, OSError) as exc:
            REDIS_ERRORS.labels(op, type(exc).__name__).inc()
            transient = isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError)
            raise SinkError(f"Redis {op} failed: {type(exc).__name__}: {exc}", dependency=DEPENDENCY,
                            retry_after=RETRY_AFTER_S if transient else None) from exc
        except SinkError:
            REDIS_ERRORS.labels(op, "SinkError").inc()
            raise
        REDIS_SECONDS.labels(op).observe(time.perf_counter() - started)
        return result


def _run_script(conn: Client, script: str, sha1: str,
                calls: Sequence[tuple[tuple[str, ...], Sequence[str | float | int]]]) -> list[Any]:
    """One pipeline of script calls (keys, args): by digest, the text itself only when the
    server does not know it (it crosses once per server start or script flush)."""
    if not calls:
        return []
    for attempt in (0, 1):
        pipe = conn.pipeline(transaction=False)
        for keys, args in calls:
            if attempt == 0:
                pipe.evalsha(sha1, len(keys), *keys, *args)
            else:
                pipe.eval(script, len(keys), *keys, *args)
        try:
            return list(pipe.execute())
        except redis.exceptions.NoScriptError:
            continue
    raise redis.exceptions.NoScriptError("script not loaded")


def _decoded(ranked: Any) -> list[tuple[str, float]]:
    """(member, score) pairs of a WITHSCORES reply, members as text."""
    return [(member.decode(), float(score)) for member, score in ranked]


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def redis_pool(url: str, config: PoolConfig, *, timeout_s: float = 2.0) -> ConnectionPool[Client]:
    """A pool of single-connection clients with socket timeouts and no hidden retries, so a dead
    server is an error within `timeout_s`, and retrying is the caller's decision."""

    def connect() -> Client:
        inner = redis.ConnectionPool.from_url(url, max_connections=1, socket_timeout=timeout_s,
                                              socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        client = redis.Redis(connection_pool=inner)
        try:
            client.ping()  # connect now: a dead server fails the borrow, not a later command
        except BaseException:
            inner.disconnect()
            raise
        return client

    def close(client: Client) -> None:
        client.connection_pool.disconnect()

    return ConnectionPool(config, create=connect, close=close, check=lambda client: client.ping(),
                          is_broken=lambda exc: not isinstance(exc, redis.ResponseError))
