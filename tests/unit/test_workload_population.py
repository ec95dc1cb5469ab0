"""The synthetic world: deterministic, internally consistent, and cheap to rebuild."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streams.workload.population import build_world
from streams.workload.themes import TOPICS


def test_same_arguments_build_the_same_world() -> None:
    assert build_world(7, 50, 400, 12, 3) == build_world(7, 50, 400, 12, 3)


def test_a_different_seed_builds_a_different_world() -> None:
    first, second = build_world(7, 50, 400, 12, 3), build_world(8, 50, 400, 12, 3)
    assert [p.cluster_id for p in first.pins] != [p.cluster_id for p in second.pins]


def test_ids_are_numbered_and_unique() -> None:
    world = build_world(1, 30, 200, 8, 2)
    assert [p.pin_id for p in world.pins][:2] == ["p00000001", "p00000002"]
    assert len({u.user_id for u in world.users}) == 30
    assert len({b.board_id for b in world.boards}) == 30 * 2
    assert world.pin("p00000010").index == 9


def test_users_hold_one_to_three_weighted_interests_and_their_own_boards() -> None:
    world = build_world(2, 100, 500, 10, 3)
    for user in world.users:
        assert 1 <= len(user.interests) <= 3
        assert sum(i.weight for i in user.interests) == pytest.approx(1.0)
        assert len(user.board_ids) == 3
        assert all(world.board(b).user_id == user.user_id for b in user.board_ids)
        board_clusters = {world.board(b).cluster_id for b in user.board_ids}
        assert board_clusters <= {i.cluster_id for i in user.interests}


def test_pins_are_created_by_users_on_their_own_boards() -> None:
    world = build_world(3, 40, 300, 6, 2)
    owners = {u.user_id: set(u.board_ids) for u in world.users}
    for pin in world.pins:
        assert pin.board_id in owners[pin.creator_id]


def test_every_cluster_gets_pins_and_ranks_cover_each_cluster() -> None:
    world = build_world(4, 20, 100, 16, 3)
    assert all(world.cluster_pins)
    for members in world.cluster_pins:
        assert [world.pins[i].popularity_rank for i in members] == list(range(len(members)))


def test_fewer_pins_than_clusters_plants_only_clusters_with_pins() -> None:
    world = build_world(5, 30, 3, 10, 1)
    live = {c for c, members in enumerate(world.cluster_pins) if members}
    assert len(live) == 3
    assert all(i.cluster_id in live for u in world.users for i in u.interests)


def test_more_clusters_than_topics_reuse_bases_with_a_tint() -> None:
    world = build_world(6, 10, 200, len(TOPICS) + 5, 1)
    names = [c.name for c in world.clusters]
    assert len(set(names)) == len(names)
    reused = [c for c in world.clusters if c.name.endswith("-2")]
    assert len(reused) == 5
    assert all(c.theme.tint > 0 for c in reused if c.theme.kind == "photo")


@pytest.mark.parametrize("bad", [(0, 10), (10, 0), (-1, 5)])
def test_non_positive_sizes_are_refused(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        build_world(1, bad[0], bad[1])


def test_world_and_sessions_never_import_image_libraries() -> None:
    code = (
        "import sys; from datetime import datetime, UTC;"
        "from streams.workload.population import build_world;"
        "from streams.workload.sessions import iter_interactions;"
        "w = build_world(1, 20, 50);"
        "list(iter_interactions(w, start=datetime(2026, 1, 1, tzinfo=UTC)));"
        "bad = [m for m in ('PIL', 'skimage', 'streams.workload.images') if m in sys.modules];"
        "sys.exit(repr(bad) if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
