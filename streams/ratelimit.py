"""Per-key token-bucket rate limiter with bounded memory (least recently seen keys are evicted)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows `per_minute` events per key, with bursts up to `per_minute`; 0 disables limiting."""

    def __init__(self, per_minute: int, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 0:
            raise ValueError("per_minute must be >= 0")
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def try_acquire(self, key: str) -> float:
        """Take one token for `key`: 0.0 when allowed, else seconds until a token is available."""
        if self.per_minute == 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.per_minute), updated=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                # An evicted key restarts with a full bucket; idle keys are the ones evicted.
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(self.per_minute),
                                bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def __len__(self) -> int:
        return len(self._buckets)
