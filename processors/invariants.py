"""The pipeline's invariants as plain functions over what was read from topics and stores:
every created pin is embedded, indexed and stored (or dead-lettered with a reason, or pending in
reconciliation); the stored graph equals a batch recomputation; every active user's cached feed
is fresh; nothing lost, nothing double-counted. `pinstream verify` gathers the inputs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from processors.graph import Graph, GraphConfig, graph_differences, graph_of
from sinks.hbase_graph import StoredRow

_SAMPLE = 10  # ids quoted per failing invariant


@dataclass(frozen=True, slots=True)
class Check:
    """One invariant: its name, whether it holds, its counts and a few offending ids."""

    name: str
    ok: bool
    counts: Mapping[str, int]
    lost: int = 0
    double_counted: int = 0
    examples: tuple[str, ...] = ()
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "counts": dict(self.counts), "lost": self.lost,
                "double_counted": self.double_counted, "examples": list(self.examples),
                "note": self.note}


@dataclass(frozen=True, slots=True)
class Verdict:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def lost(self) -> int:
        return sum(check.lost for check in self.checks)

    @property
    def double_counted(self) -> int:
        return sum(check.double_counted for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "lost": self.lost, "double_counted": self.double_counted,
                "checks": [check.to_json() for check in self.checks]}


# --- pins ---------------------------------------------------------------------------------------

@dataclass
class PinFacts:
    """What the topics and stores say about pins, keyed by pin id.

    `indexed` is None when no index could be read; `index_size` is the worker's vector count
    (None when no worker answered)."""

    created: set[str] = field(default_factory=set)
    embedded: set[str] = field(default_factory=set)
    stored_with_embedding: set[str] = field(default_factory=set)
    stored_pending: dict[str, str] = field(default_factory=dict)  # pin id -> pending reason
    dead_lettered: dict[str, str] = field(default_factory=dict)  # pin id -> reason
    reconciling: dict[str, str] = field(default_factory=dict)  # pin id -> stage
    indexed: set[str] | None = None
    index_size: int | None = None


def check_pins(facts: PinFacts) -> Check:
    """Each created pin ends in exactly one accepted state; anything else is lost."""
    states: Counter[str] = Counter()
    lost: list[str] = []
    missing: Counter[str] = Counter()
    for pin in sorted(facts.created):
        gaps = _pin_gaps(pin, facts)
        if not gaps:
            states["complete"] += 1
        elif pin in facts.dead_lettered:
            states["dead_lettered"] += 1
        elif pin in facts.reconciling:
            states["reconciling"] += 1
        else:
            lost.append(pin)
            missing.update(gaps)
    # With only the worker's vector count, the index is checked in aggregate: fewer vectors than
    # embedded pins is a loss, more is a double count.
    surplus = shortfall = 0
    if facts.index_size is not None:
        surplus = max(0, facts.index_size - len(facts.embedded))
        shortfall = max(0, len(facts.embedded) - facts.index_size)
    counts = {"created": len(facts.created), **states, "lost": len(lost),
              **{f"lost_not_{gap}": n for gap, n in sorted(missing.items())},
              "index_vectors": facts.index_size if facts.index_size is not None else -1,
              "index_vectors_missing": shortfall, "index_vectors_surplus": surplus}
    note = "index checked per pin" if facts.indexed is not None else (
        "index checked by the worker's vector count" if facts.index_size is not None
        else "index not checked: no worker and no snapshot")
    return Check("pins: embedded, indexed and stored, or dead-lettered, or reconciling",
                 not lost and not surplus and not shortfall, counts, lost=len(lost) + shortfall,
                 double_counted=surplus,
                 examples=tuple(lost[:_SAMPLE]), note=note)


def _pin_gaps(pin: str, facts: PinFacts) -> list[str]:
    gaps = []
    if pin not in facts.embedded:
        gaps.append("embedded")
    if pin not in facts.stored_with_embedding:
        gaps.append("stored")
    if facts.indexed is not None and pin not in facts.indexed:
        gaps.append("indexed")
    return gaps


# --- graph --------------------------------------------------------------------------------------

def check_graph(expected: Graph, stored: Mapping[str, StoredRow], config: GraphConfig,
                *, reconciling: int = 0) -> Check:
    """The stored graph against `expected`, the `batch_recompute` of every event on the input
    topics. A stored edge heavier than the recomputation (in absolute weight) counts as
    double-counted, a lighter or missing one as lost."""
    actual = graph_of(stored)
    differences = graph_differences(expected, actual, config.half_life_ms)
    over, under = _classify(expected, actual, config.half_life_ms)
    counts = {"rows_expected": len(expected), "rows_stored": len(actual),
              "edges_expected": _edges(expected), "edges_stored": _edges(actual),
              "edges_differing": len(differences), "edges_over": len(over),
              "edges_under": len(under), "reconciliations_pending": reconciling}
    return Check("graph: HBase equals a batch recomputation from the input topics",
                 not differences, counts, lost=len(under), double_counted=len(over),
                 examples=tuple(differences[:_SAMPLE]))


def _edges(graph: Graph) -> int:
    return sum(len(row) for row in graph.values())


def _classify(expected: Graph, actual: Graph, half_life_ms: float,
              tolerance: float = 1e-9) -> tuple[list[str], list[str]]:
    over: list[str] = []
    under: list[str] = []
    for row in expected.keys() | actual.keys():
        want, got = expected.get(row, {}), actual.get(row, {})
        for column in want.keys() | got.keys():
            a, b = want.get(column), got.get(column)
            moment = max(edge.updated_ms for edge in (a, b) if edge is not None)
            x = abs(a.at(moment, half_life_ms)) if a else 0.0
            y = abs(b.at(moment, half_life_ms)) if b else 0.0
            if y - x > tolerance * max(1.0, x, y):
                over.append(f"{row} -> {column}")
            elif x - y > tolerance * max(1.0, x, y):
                under.append(f"{row} -> {column}")
    return over, under


# --- feeds --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class UserFeedFacts:
    """One active user: when they last interacted, the newest FeedUpdated for them (Kafka
    timestamps, ms), the pins it offered, the pins cached in Redis (None: no cached feed) and the
    pins the user hid."""

    user_id: str
    last_interaction_ms: int
    last_feed_ms: int | None
    published: frozenset[str]
    cached: frozenset[str] | None
    hidden: frozenset[str] = frozenset()
    reconciling: bool = False


def check_feeds(users: Iterable[UserFeedFacts]) -> Check:
    """A fresh feed: published after the user's last interaction, cached as published (less pins
    hidden since), and offering no hidden pin."""
    states: Counter[str] = Counter()
    stale: list[str] = []
    for user in sorted(users, key=lambda u: u.user_id):
        problem = _feed_problem(user)
        if problem is None:
            states["fresh"] += 1
        elif user.reconciling:
            states["reconciling"] += 1
        else:
            states[problem] += 1
            stale.append(f"{user.user_id}: {problem}")
    counts = {"active_users": sum(states.values()), **states}
    return Check("feeds: every active user's cached feed is fresh", not stale, counts,
                 examples=tuple(stale[:_SAMPLE]))


def _feed_problem(user: UserFeedFacts) -> str | None:
    if user.last_feed_ms is None:
        return "never_published"
    if user.last_feed_ms < user.last_interaction_ms:
        return "published_before_last_interaction"
    if user.cached is None:
        return "not_cached" if user.published else None
    if user.cached & user.hidden:
        return "hidden_pin_served"
    if user.cached != user.published - user.hidden:
        return "cache_differs_from_published"
    return None


def verdict(*checks: Check) -> Verdict:
    return Verdict(tuple(checks))
