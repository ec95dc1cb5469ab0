"""Retry delays as injected strategy objects: exponential backoff with full jitter by default,
deterministic under a seeded random generator."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol


class Backoff(Protocol):
    """How long to wait before retry number `attempt` (1 = the first retry)."""

    def delay(self, attempt: int) -> float: ...


@dataclass
class FullJitterBackoff:
    """Uniform in [0, min(cap, base * 2^(attempt-1))]: "full jitter", so that records failing
    together against one dependency spread their retries out instead of returning in step."""

    base_s: float = 1.0
    cap_s: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError(f"need 0 < base_s <= cap_s, not base_s={self.base_s}, cap_s={self.cap_s}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay `attempt` may draw."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1, not {attempt}")
        # 2**attempt overflows a float far beyond any cap: stop doubling once past it.
        exponent = min(attempt - 1, 64)
        return min(self.cap_s, self.base_s * 2.0 ** exponent)

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0.0, self.ceiling(attempt))


@dataclass(frozen=True)
class FixedBackoff:
    """The same delay every time (tests, and operators who want a steady retry pace)."""

    delay_s: float = 0.0

    def delay(self, attempt: int) -> float:
        return self.delay_s
