"""Circuit breakers, one per dependency (hbase, redis, model, kafka): after enough consecutive
failures a dependency is left alone for a while, then probed by one call before traffic resumes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import Counter, Gauge

from streams.metrics import REGISTRY

BREAKER_STATE = Gauge(
    "pinstream_breaker_state",
    "Circuit breaker state per dependency: 0 closed, 1 half-open (probing), 2 open.",
    ["dependency"], registry=REGISTRY,
)
BREAKER_TRANSITIONS = Counter(
    "pinstream_breaker_transitions_total", "Circuit breaker state changes, by dependency and new state.",
    ["dependency", "state"], registry=REGISTRY,
)


class BreakerState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


_GAUGE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int = 5  # consecutive failures that open the breaker
    open_s: float = 30.0  # how long it stays open before one probe is let through

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.open_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and open_s > 0")


class CircuitBreaker:
    """closed -> (threshold consecutive failures) -> open -> (open_s later) -> half-open: one
    probe call is allowed; its success closes the breaker, its failure opens it again.

    Callers ask `allow()` before calling the dependency and report the outcome with
    `record_success()` / `record_failure()`; `retry_in()` says how long a refused caller waits.
    """

    def __init__(self, dependency: str, config: BreakerConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dependency = dependency
        self.config = config
        self.clock = clock
        self.failures = 0
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probing = False
        BREAKER_STATE.labels(dependency).set(0)

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.clock() - self._opened_at >= self.config.open_s:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """May a call go to the dependency now? In half-open, only the first caller (the probe)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def retry_in(self) -> float:
        """Seconds until `allow()` may say yes again (0 when it would now)."""
        state = self.state
        if state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.config.open_s - self.clock())
        if state is BreakerState.HALF_OPEN and self._probing:
            return self.config.open_s  # the probe's outcome decides; woken by it anyway
        return 0.0

    def record_success(self) -> None:
        self.failures = 0
        self._probing = False
        if self._state is not BreakerState.CLOSED:
            self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self.failures += 1
        was_probe = self._probing
        self._probing = False
        if was_probe or self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self.failures >= self.config.failure_threshold):
            self._opened_at = self.clock()
            self._move(BreakerState.OPEN)

    def _move(self, state: BreakerState) -> None:
        self._state = state
        BREAKER_STATE.labels(self.dependency).set(_GAUGE_VALUE[state])
        BREAKER_TRANSITIONS.labels(self.dependency, str(state)).inc()


class Breakers:
    """One breaker per dependency name, made on first use with the same config and clock."""

    def __init__(self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._by_dependency: dict[str, CircuitBreaker] = {}

    def __getitem__(self, dependency: str) -> CircuitBreaker:
        breaker = self._by_dependency.get(dependency)
        if breaker is None:
            breaker = self._by_dependency[dependency] = CircuitBreaker(dependency, self.config, self.clock)
        return breaker

    def states(self) -> dict[str, BreakerState]:
        return {name: breaker.state for name, breaker in sorted(self._by_dependency.items())}
