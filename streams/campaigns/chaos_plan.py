"""What the fault campaign does and when: the traffic it sends and a seeded schedule of faults
(kill -9 of a worker or the reconciler; a stop and start of Redis, the HBase Thrift server or the
Kafka broker). Pure: the same plan and seed give the same schedule."""

from __future__ import annotations

import random
from dataclasses import dataclass

KILL_TARGETS = ("worker", "reconciler")
OUTAGE_TARGETS = ("redis", "thrift", "kafka")
_MIN_KILL_GAP_S = 3.0


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float  # seconds after the traffic starts
    kind: str  # "kill" | "outage"
    target: str  # a KILL_TARGETS entry for kills, an OUTAGE_TARGETS entry (stack service) for outages
    duration_s: float = 0.0  # outages: how long the service stays down

    def describe(self) -> str:
        if self.kind == "kill":
            return f"{self.at_s:6.1f}s kill -9 {self.target}"
        return f"{self.at_s:6.1f}s stop {self.target} for {self.duration_s:.0f}s"


@dataclass(frozen=True, slots=True)
class ChaosPlan:
    events: int = 100_000  # pins + interactions
    pins: int = 1_000  # pins with generated images (each embedded by the real model)
    users: int = 400
    duration_s: float = 360.0  # the traffic is spread evenly over this
    kills: int = 10
    reconciler_kill_every: int = 4  # every n-th kill hits the reconciler instead of the worker
    outages: tuple[str, ...] = OUTAGE_TARGETS
    outage_s: float = 30.0
    seed: int = 7
    converge_timeout_s: float = 900.0  # after the traffic and the last fault: time to reach the invariants

    def __post_init__(self) -> None:
        if self.pins < 0 or self.events < self.pins:
            raise ValueError(f"events ({self.events}) must be >= pins ({self.pins}) >= 0")
        if self.kills < 0 or self.duration_s <= 0 or self.outage_s <= 0:
            raise ValueError("kills must be >= 0, duration_s and outage_s > 0")
        unknown = set(self.outages) - set(OUTAGE_TARGETS)
        if unknown:
            raise ValueError(f"unknown outage targets {sorted(unknown)}; choose from {OUTAGE_TARGETS}")
        if len(self.outages) * self.outage_s > 0.9 * self.duration_s:
            raise ValueError(f"{len(self.outages)} outages of {self.outage_s:g}s do not fit one after "
                             f"another in {self.duration_s:g}s of traffic; lengthen the run")

    @property
    def interactions(self) -> int:
        return self.events - self.pins


def schedule(plan: ChaosPlan) -> list[Fault]:
    """Outages one after another (never two services down at once), each in its own slot of the
    run; kills at random moments, at least a few seconds apart, some during outages."""
    rng = random.Random(plan.seed)
    faults: list[Fault] = []
    if plan.outages:
        order = list(plan.outages)
        rng.shuffle(order)
        slot = plan.duration_s / len(order)
        for i, target in enumerate(order):
            slack = max(slot - plan.outage_s, 0.0)
            start = i * slot + rng.uniform(0.2 * slack, 0.8 * slack)
            faults.append(Fault(round(start, 1), "outage", target, plan.outage_s))
    kill_times: list[float] = []
    while len(kill_times) < plan.kills:
        moment = rng.uniform(0.03 * plan.duration_s, 0.97 * plan.duration_s)
        if all(abs(moment - other) >= _MIN_KILL_GAP_S for other in kill_times) or \
                plan.duration_s < _MIN_KILL_GAP_S * plan.kills * 2:
            kill_times.append(moment)
    for n, moment in enumerate(sorted(kill_times), start=1):
        every = plan.reconciler_kill_every
        target = "reconciler" if every and n % every == 0 else "worker"
        faults.append(Fault(round(moment, 1), "kill", target))
    return sorted(faults, key=lambda fault: fault.at_s)
