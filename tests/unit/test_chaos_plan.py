"""The fault campaign's schedule and traffic order, without servers."""

from __future__ import annotations

from itertools import pairwise

import pytest

from streams.campaigns.chaos_plan import ChaosPlan, schedule
from streams.campaigns.chaos_traffic import Outgoing, _interleave
from streams.topics import PINS_CREATED, PINS_INTERACTIONS


def test_schedule_is_seeded_and_holds_every_kill_and_outage() -> None:
    plan = ChaosPlan(duration_s=360, kills=10, outage_s=30, seed=3)
    faults = schedule(plan)
    assert faults == schedule(plan)
    assert faults != schedule(ChaosPlan(duration_s=360, kills=10, outage_s=30, seed=4))
    kills = [f for f in faults if f.kind == "kill"]
    outages = [f for f in faults if f.kind == "outage"]
    assert len(kills) == 10 and sum(f.target == "reconciler" for f in kills) == 2  # every 4th
    assert sorted(f.target for f in outages) == ["kafka", "redis", "thrift"]
    assert [f.at_s for f in faults] == sorted(f.at_s for f in faults)
    assert all(0 < f.at_s < 360 for f in faults)
    times = sorted(f.at_s for f in kills)
    assert min(b - a for a, b in pairwise(times)) >= 2.9


def test_outages_never_overlap_and_end_within_the_run() -> None:
    for seed in range(20):
        outages = [f for f in schedule(ChaosPlan(duration_s=120, outage_s=30, seed=seed))
                   if f.kind == "outage"]
        windows = sorted((f.at_s, f.at_s + f.duration_s) for f in outages)
        assert all(end <= next_start for (_, end), (next_start, _) in pairwise(windows))
        assert windows[-1][1] <= 120


@pytest.mark.parametrize(("overrides", "message"), [
    ({"events": 10, "pins": 20}, "must be >= pins"),
    ({"outages": ("postgres",)}, "unknown outage targets"),
    ({"duration_s": 60, "outage_s": 30}, "do not fit"),
])
def test_impossible_plans_are_refused_with_the_reason(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChaosPlan(**overrides)  # type: ignore[arg-type]


def test_pins_are_spread_through_the_interactions_in_order() -> None:
    pins = [Outgoing(PINS_CREATED, f"p{i}", None) for i in range(3)]  # type: ignore[arg-type]
    clicks = [Outgoing(PINS_INTERACTIONS, f"u{i}", None) for i in range(9)]  # type: ignore[arg-type]
    merged = _interleave(pins, clicks)
    assert [o.key for o in merged if o.spec is PINS_CREATED] == ["p0", "p1", "p2"]
    assert [o.key for o in merged if o.spec is PINS_INTERACTIONS] == [f"u{i}" for i in range(9)]
    assert [i for i, o in enumerate(merged) if o.spec is PINS_CREATED] == [0, 4, 8]
    assert _interleave([], clicks) == clicks
