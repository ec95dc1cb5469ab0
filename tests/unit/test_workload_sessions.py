"""Interaction sessions: valid references, planted structure visible in the stream, determinism."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest

from streams.workload.population import World, build_world
from streams.workload.records import InteractionRecord, epoch_ms
from streams.workload.sessions import MAX_SESSION_EVENTS, iter_interactions

START = datetime(2026, 11, 20, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(11, 300, 3000, 12, 3)


@pytest.fixture(scope="module")
def events(world: World) -> list[InteractionRecord]:
    return list(iter_interactions(world, start=START, days=7, sessions_per_user=4))


def _own_clusters(world: World) -> dict[str, set[int]]:
    return {u.user_id: {i.cluster_id for i in u.interests} for u in world.users}


def test_enough_events_for_the_statistics(events: list[InteractionRecord]) -> None:
    assert len(events) > 10_000


def test_every_event_references_an_existing_pin_and_user(
    world: World, events: list[InteractionRecord]
) -> None:
    pins = {p.pin_id for p in world.pins}
    users = {u.user_id for u in world.users}
    assert all(e.pin_id in pins and e.user_id in users for e in events)


def test_saves_name_one_of_the_users_boards_and_nothing_else_has_a_board(
    world: World, events: list[InteractionRecord]
) -> None:
    boards = {u.user_id: set(u.board_ids) for u in world.users}
    saves = [e for e in events if e.action == "save"]
    assert saves
    assert all(e.board_id in boards[e.user_id] for e in saves)
    assert all(e.board_id is None for e in events if e.action != "save")


def test_events_are_sorted_by_time_within_the_window(events: list[InteractionRecord]) -> None:
    times = [e.event_time_ms for e in events]
    assert times == sorted(times)
    assert times[0] >= epoch_ms(START)
    assert times[-1] < epoch_ms(START) + 8 * 86_400_000  # a session may run past the last day


def test_sessions_belong_to_one_user_and_stay_short(events: list[InteractionRecord]) -> None:
    by_session: dict[str, list[InteractionRecord]] = defaultdict(list)
    for event in events:
        by_session[event.session_id].append(event)
    assert all(len({e.user_id for e in s}) == 1 for s in by_session.values())
    assert all(len(s) <= MAX_SESSION_EVENTS for s in by_session.values())
    assert all(s[0].action == "impression" for s in by_session.values())


def test_popularity_is_zipf_skewed(world: World, events: list[InteractionRecord]) -> None:
    counts = Counter(e.pin_id for e in events)
    ranked = sorted((counts.get(p.pin_id, 0) for p in world.pins), reverse=True)
    top_tenth = sum(ranked[: len(ranked) // 10])
    assert top_tenth / len(events) > 0.6


def test_users_mostly_interact_within_their_planted_clusters(
    world: World, events: list[InteractionRecord]
) -> None:
    own = _own_clusters(world)
    inside = sum(world.pin(e.pin_id).cluster_id in own[e.user_id] for e in events)
    assert inside / len(events) > 0.6


def test_hides_fall_mostly_outside_the_users_clusters(
    world: World, events: list[InteractionRecord]
) -> None:
    own = _own_clusters(world)
    hides = [e for e in events if e.action == "hide"]
    outside = sum(world.pin(e.pin_id).cluster_id not in own[e.user_id] for e in hides)
    assert hides and outside / len(hides) > 0.6
    assert len(hides) < 0.05 * len(events)


def test_all_actions_occur(events: list[InteractionRecord]) -> None:
    assert set(Counter(e.action for e in events)) == {"impression", "click", "closeup", "save", "hide"}


def test_same_seed_same_stream_and_another_seed_differs(world: World) -> None:
    def run(w: World) -> list[InteractionRecord]:
        return list(iter_interactions(w, start=START, days=2, sessions_per_user=1))

    assert run(world) == run(build_world(11, 300, 3000, 12, 3))
    assert run(world) != run(build_world(12, 300, 3000, 12, 3))


def test_non_positive_days_are_refused(world: World) -> None:
    with pytest.raises(ValueError):
        next(iter_interactions(world, start=START, days=0))
