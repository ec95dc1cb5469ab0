"""Retry strategy and circuit breaker: full-jitter delays within their bounds and reproducible
under a seed; breaker transitions closed -> open -> half-open (one probe) -> closed or open."""

from __future__ import annotations

import random

import pytest

from processors.backoff import FullJitterBackoff
from processors.breaker import BreakerConfig, Breakers, BreakerState, CircuitBreaker
from streams.metrics import REGISTRY
from tests.unit.test_ratelimit import FakeClock


def test_full_jitter_delays_stay_within_the_doubling_ceiling_and_the_cap() -> None:
    backoff = FullJitterBackoff(base_s=0.5, cap_s=10.0, rng=random.Random(1))
    for attempt in range(1, 40):
        ceiling = min(10.0, 0.5 * 2 ** (attempt - 1))
        assert backoff.ceiling(attempt) == ceiling
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
    assert backoff.ceiling(10_000) == 10.0  # no overflow far past the cap


def test_full_jitter_spreads_delays_over_the_whole_range() -> None:
    backoff = FullJitterBackoff(base_s=1.0, cap_s=100.0, rng=random.Random(7))
    delays = [backoff.delay(5) for _ in range(2000)]  # ceiling 16 s
    assert min(delays) < 1.0 and max(delays) > 15.0
    assert 7.0 < sum(delays) / len(delays) < 9.0  # uniform: mean ~ ceiling / 2


def test_the_same_seed_gives_the_same_delays_and_another_seed_others() -> None:
    def draw(seed: int) -> list[float]:
        backoff = FullJitterBackoff(rng=random.Random(seed))
        return [backoff.delay(a) for a in range(1, 12)]

    assert draw(42) == draw(42)
    assert draw(42) != draw(43)


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        FullJitterBackoff(base_s=0.0)
    with pytest.raises(ValueError):
        FullJitterBackoff(base_s=10.0, cap_s=1.0)
    with pytest.raises(ValueError):
        FullJitterBackoff().ceiling(0)


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("hbase-t1", BreakerConfig(failure_threshold=3, open_s=30.0), clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the count
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(30.0)
    clock.now += 10
    assert not breaker.allow() and breaker.retry_in() == pytest.approx(20.0)
    assert REGISTRY.get_sample_value("pinstream_breaker_state", {"dependency": "hbase-t1"}) == 2


def test_half_open_lets_exactly_one_probe_through_and_its_success_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("redis-t2", BreakerConfig(failure_threshold=1, open_s=5.0), clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.state is BreakerState.HALF_OPEN
    assert REGISTRY.get_sample_value("pinstream_breaker_state", {"dependency": "redis-t2"}) == 1
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else waits for its outcome
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() and breaker.allow()


def test_a_failed_probe_opens_the_breaker_again_for_a_full_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("model-t3", BreakerConfig(failure_threshold=2, open_s=5.0), clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 6
    assert breaker.allow()
    breaker.record_failure()  # one failure suffices in half-open
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_in() == pytest.approx(5.0)
    clock.now += 5
    assert breaker.allow()


def test_breakers_are_one_per_dependency() -> None:
    clock = FakeClock()
    breakers = Breakers(BreakerConfig(failure_threshold=1, open_s=5.0), clock)
    breakers["hbase-t4"].record_failure()
    assert breakers["hbase-t4"] is breakers["hbase-t4"]
    assert not breakers["hbase-t4"].allow()
    assert breakers["redis-t4"].allow()
    assert breakers.states() == {"hbase-t4": BreakerState.OPEN, "redis-t4": BreakerState.CLOSED}
