"""Per-user token bucket: burst, refill, retry hints, bounded memory."""

from __future__ import annotations

import pytest

from streams.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_allows_burst_up_to_limit_then_refuses_with_retry_hint() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    assert all(limiter.try_acquire("u") == 0.0 for _ in range(10))
    retry = limiter.try_acquire("u")
    assert retry == pytest.approx(6.0)  # one token per 6 s at 10/min


def test_tokens_refill_with_time_and_users_are_independent() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    for _ in range(10):
        limiter.try_acquire("u")
    assert limiter.try_acquire("other") == 0.0
    clock.now += 6.0
    assert limiter.try_acquire("u") == 0.0
    assert limiter.try_acquire("u") > 0


def test_zero_disables_limiting() -> None:
    limiter = RateLimiter(0)
    assert all(limiter.try_acquire("u") == 0.0 for _ in range(1000))


def test_memory_is_bounded_by_evicting_least_recent_users() -> None:
    limiter = RateLimiter(5, max_keys=100, clock=FakeClock())
    for i in range(1000):
        limiter.try_acquire(f"u{i}")
    assert len(limiter) == 100


def test_negative_limit_is_rejected() -> None:
    with pytest.raises(ValueError):
        RateLimiter(-1)
