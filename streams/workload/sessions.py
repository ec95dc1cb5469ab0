"""Interaction sessions of a world's users, merged into one stream ordered by event time.

Users mostly browse their planted clusters' pins (Zipf-popular within each cluster), with some
exploration; engagement is higher in-cluster and hides fall mostly outside it.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate

from streams.workload.population import User, World, substream, zipf_weights
from streams.workload.records import Action, InteractionRecord, epoch_ms, event_uuid

DAY_MS = 86_400_000
EXPLORE_SHARE = 0.15
MAX_SESSION_EVENTS = 30
# Relative chance that a session starts in each UTC hour: quiet nights, busy evenings.
_HOURLY = (1, 1, 1, 1, 1, 2, 3, 5, 6, 5, 4, 4, 6, 5, 4, 4, 5, 6, 8, 9, 10, 9, 6, 3)
_HOUR_CUM = tuple(accumulate(_HOURLY))


@dataclass(frozen=True)
class Engagement:
    """Probabilities of each follow-up to an impression, for in- or out-of-cluster pins."""

    click: float
    closeup: float  # given a click
    save_after_click: float
    save_from_grid: float  # without a click, straight from the feed
    hide: float  # when not clicked


IN_CLUSTER = Engagement(
    click=0.35, closeup=0.6, save_after_click=0.3, save_from_grid=0.03, hide=0.005
)
OUT_OF_CLUSTER = Engagement(
    click=0.08, closeup=0.4, save_after_click=0.08, save_from_grid=0.0, hide=0.12
)


@dataclass(frozen=True)
class PopularitySampler:
    """Cumulative weights precomputed once, so each draw is one bisection."""

    zipf_cum: tuple[tuple[float, ...], ...]  # per cluster, over its pins by popularity
    live_clusters: tuple[int, ...]
    live_cum: tuple[float, ...]

    @classmethod
    def of(cls, world: World) -> PopularitySampler:
        live = tuple(c for c, members in enumerate(world.cluster_pins) if members)
        return cls(
            zipf_cum=tuple(tuple(accumulate(zipf_weights(len(m)))) for m in world.cluster_pins),
            live_clusters=live,
            live_cum=tuple(accumulate(world.clusters[c].weight for c in live)),
        )

    def pin(self, world: World, cluster_id: int, rng: random.Random) -> int:
        cum = self.zipf_cum[cluster_id]
        rank = min(bisect(cum, rng.random() * cum[-1]), len(cum) - 1)
        return world.cluster_pins[cluster_id][rank]

    def explore_cluster(self, rng: random.Random) -> int:
        position = bisect(self.live_cum, rng.random() * self.live_cum[-1])
        return self.live_clusters[min(position, len(self.live_clusters) - 1)]


def iter_interactions(
    world: World, *, start: datetime, days: int = 7, sessions_per_user: float = 3.0
) -> Iterator[InteractionRecord]:
    """Every interaction of every session, in event-time order, over `days` from `start`.

    Users get about `sessions_per_user` sessions each, scaled by their activity. Memory grows
    with the number of sessions planned, not with the number of events.
    """
    if days <= 0 or sessions_per_user <= 0:
        raise ValueError("days and sessions_per_user must be positive")
    sampler = PopularitySampler.of(world)
    plan = plan_sessions(world, start_ms=epoch_ms(start), days=days, per_user=sessions_per_user)
    pending: list[tuple[int, int, InteractionRecord]] = []
    sequence = 0
    for session_start, user_index, session_seed in plan:
        # Sessions start in time order, so nothing later can precede what is already due.
        while pending and pending[0][0] < session_start:
            yield heapq.heappop(pending)[2]
        user = world.users[user_index]
        for event in session_events(world, user, session_start, session_seed, sampler):
            heapq.heappush(pending, (event.event_time_ms, sequence, event))
            sequence += 1
    while pending:
        yield heapq.heappop(pending)[2]


def plan_sessions(
    world: World, *, start_ms: int, days: int, per_user: float
) -> list[tuple[int, int, int]]:
    """(start ms, user index, session seed) of every session, sorted by start."""
    rng = substream(world.seed, "sessions")
    midnight = start_ms - start_ms % DAY_MS
    plan = []
    for user_index, user in enumerate(world.users):
        for _ in range(max(1, round(per_user * user.activity))):
            hour = bisect(_HOUR_CUM, rng.random() * _HOUR_CUM[-1])
            moment = midnight + rng.randrange(days) * DAY_MS + hour * 3_600_000
            moment += rng.randrange(3_600_000)
            # Hours of the first day before `start` wrap to the same hour after the last day.
            if moment < start_ms:
                moment += days * DAY_MS
            plan.append((moment, user_index, rng.getrandbits(63)))
    plan.sort()
    return plan


def session_events(
    world: World, user: User, start_ms: int, seed: int, sampler: PopularitySampler
) -> list[InteractionRecord]:
    """One session: a scroll through pins with follow-ups, time-ordered, at most 30 events."""
    rng = random.Random(seed)
    session_id = event_uuid(rng)
    interest_cum = tuple(accumulate(i.weight for i in user.interests))
    own_clusters = {i.cluster_id for i in user.interests}
    events: list[InteractionRecord] = []
    clock = start_ms

    def emit(at_ms: int, pin_id: str, action: Action, board_id: str | None = None) -> None:
        event_id = event_uuid(rng)
        events.append(
            InteractionRecord(event_id, at_ms, user.user_id, pin_id, action, session_id, board_id)
        )

    for _ in range(rng.randint(3, 14)):
        if rng.random() < EXPLORE_SHARE or not user.interests:
            cluster_id = sampler.explore_cluster(rng)
        else:
            position = bisect(interest_cum, rng.random() * interest_cum[-1])
            cluster_id = user.interests[min(position, len(user.interests) - 1)].cluster_id
        pin = world.pins[sampler.pin(world, cluster_id, rng)]
        odds = IN_CLUSTER if pin.cluster_id in own_clusters else OUT_OF_CLUSTER
        emit(clock, pin.pin_id, "impression")
        if rng.random() < odds.click:
            clock += rng.randint(1_000, 15_000)
            emit(clock, pin.pin_id, "click")
            if rng.random() < odds.closeup:
                clock += rng.randint(2_000, 30_000)
                emit(clock, pin.pin_id, "closeup")
            if rng.random() < odds.save_after_click:
                clock += rng.randint(1_000, 10_000)
                emit(clock, pin.pin_id, "save", _save_board(world, user, pin.cluster_id, rng))
        elif rng.random() < odds.save_from_grid:
            clock += rng.randint(1_000, 5_000)
            emit(clock, pin.pin_id, "save", _save_board(world, user, pin.cluster_id, rng))
        elif rng.random() < odds.hide:
            clock += rng.randint(500, 3_000)
            emit(clock, pin.pin_id, "hide")
        clock += rng.randint(2_000, 40_000)
        if len(events) >= MAX_SESSION_EVENTS:
            break
    return events[:MAX_SESSION_EVENTS]


def _save_board(world: World, user: User, cluster_id: int, rng: random.Random) -> str:
    """A board of the user's for this cluster when there is one, else any of the user's boards."""
    matching = [b for b in user.board_ids if world.board(b).cluster_id == cluster_id]
    return rng.choice(matching or list(user.board_ids))
