"""Live feed patches: what a batch of interactions changes in its users' cached feeds at once,
before the coalesced full re-rank (which comes at most once per user per refresh interval).

An engagement takes the engaged pin out of the feed (a feed does not show engaged pins again) and
lifts the pin's strongest co-engaged neighbours to the top, the way a re-rank would favour them
next; a hide takes the pin out. Rows come from the graph processor's cache, which the batch just
updated, so a patch costs no store read; the Redis side is one script call per user.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import exp2

from processors.feed import FeedParams
from processors.graph import GraphConfig
from sinks.hbase_graph import NODE_PREFIXES, Edge, node_key
from sinks.redis import FeedPatch
from streams.events import InteractionAction, NodeType, PinInteraction
from streams.settings import Settings

_PIN_PREFIX = NODE_PREFIXES[NodeType.PIN] + ":"


@dataclass(frozen=True, slots=True)
class PatchParams:
    action_weights: Mapping[InteractionAction, float]
    related: int = 10  # neighbours lifted per engaged pin; 0 = no live patches
    min_engaged_weight: float = 0.5  # as the ranker: pins engaged this much are not shown again
    half_life_ms: float = 7 * 86_400_000.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PatchParams:
        """The graph's action weights and half-life, the ranker's engaged-pin threshold."""
        graph = GraphConfig.from_settings(settings)
        return cls(graph.action_weights, related=settings.feed_live_related,
                   min_engaged_weight=FeedParams.from_settings(settings).rank.min_engaged_weight,
                   half_life_ms=graph.half_life_ms)


@dataclass(frozen=True, slots=True)
class TimedInteraction:
    """An interaction and the Kafka timestamp (ms) of its record, for the feed's freshness stamp."""

    event: PinInteraction
    timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
class PlannedPatch:
    patch: FeedPatch
    oldest_ms: int | None  # the earliest record the patch covers


class RelatedCache:
    """`_related` per pin, for rows that are replaced, never changed in place (the live patch
    process's copy-on-write rows): a pin's strongest co-engaged neighbours and their shares do not
    depend on the moment they are computed at (every column decays by the same factor), so they
    change only when the row does. The graph stage pushes a popular pin's row again every few
    batches, though, and a list is also reused for `reuse_ms` after it was computed from an
    earlier version of the row: a live patch then lifts what was related up to that long ago (the
    next re-rank sees the new edges). At most `max_pins` pins, then it starts over."""

    def __init__(self, max_pins: int = 50_000, reuse_ms: int = 0) -> None:
        self.max_pins = max_pins
        self.reuse_ms = reuse_ms
        # pin -> (the row it was computed from, when, the list)
        self._entries: dict[str, tuple[Mapping[str, Edge], int, list[tuple[str, float]]]] = {}
        self.hits = 0
        self.misses = 0

    def related(self, pin: str, row: Mapping[str, Edge], params: PatchParams, now_ms: int
                ) -> list[tuple[str, float]]:
        entry = self._entries.get(pin)
        if entry is not None and (entry[0] is row or 0 <= now_ms - entry[1] < self.reuse_ms):
            self.hits += 1
            return entry[2]
        self.misses += 1
        result = _related(row, params, now_ms)
        if len(self._entries) >= self.max_pins:
            self._entries.clear()
        self._entries[pin] = (row, now_ms, result)
        return result


def plan_patches(interactions: Sequence[TimedInteraction], rows: Callable[[str], Mapping[str, Edge] | None],
                 params: PatchParams, now_ms: int, related_cache: RelatedCache | None = None
                 ) -> list[PlannedPatch]:
    """One patch per user whose interactions change the feed (engagements, hides), in the order
    users first appear; impressions and other weightless actions change nothing here."""
    if params.related <= 0:
        return []
    strongest = max((w for w in params.action_weights.values() if w > 0), default=1.0)
    by_user: dict[str, list[TimedInteraction]] = {}
    for item in interactions:
        weight = params.action_weights.get(item.event.action, 0.0)
        if weight >= params.min_engaged_weight or weight < 0:
            by_user.setdefault(item.event.user_id, []).append(item)
    planned = []
    related: dict[str, list[tuple[str, float]]] = {}  # per engaged pin, once per batch
    for user, items in by_user.items():
        remove = list(dict.fromkeys(item.event.pin_id for item in items))
        user_row = rows(node_key(NodeType.USER, user)) or {}
        removed = set(remove)
        lifts: dict[str, tuple[float, str]] = {}
        for item in items:
            weight = params.action_weights.get(item.event.action, 0.0)
            if weight <= 0:
                continue
            source = item.event.pin_id
            if source not in related:
                pin_row = rows(node_key(NodeType.PIN, source)) or {}
                related[source] = (_related(pin_row, params, now_ms) if related_cache is None
                                   else related_cache.related(source, pin_row, params, now_ms))
            for pin, share in related[source]:
                if pin in removed or _not_shown(user_row.get(_PIN_PREFIX + pin), params, now_ms):
                    continue
                score = weight / strongest * share
                if score > lifts.get(pin, (0.0, ""))[0]:
                    lifts[pin] = (score, f"live:{source}")
        stamps = [item.timestamp_ms for item in items if item.timestamp_ms is not None]
        lifted = tuple((pin, round(score, 6), reason) for pin, (score, reason)
                       in sorted(lifts.items(), key=lambda kv: (-kv[1][0], kv[0])))
        planned.append(PlannedPatch(FeedPatch(user, tuple(remove), lifted), min(stamps, default=None)))
    return planned


def _not_shown(edge: Edge | None, params: PatchParams, now_ms: int) -> bool:
    """Whether the ranker leaves out a pin with this edge from the user: engaged enough, or
    hidden. Checked per candidate, not for the whole user row (a user may hold thousands)."""
    if edge is None:
        return False
    weight = edge.at(now_ms, params.half_life_ms)
    return weight >= params.min_engaged_weight or weight < 0


def _related(pin_row: Mapping[str, Edge], params: PatchParams, now_ms: int) -> list[tuple[str, float]]:
    """The pin's `related` strongest co-engaged pins, each with its weight over the strongest's
    (ties by pin id). A popular pin's row holds thousands of columns: one pass with the decay
    inlined (`Edge.at`) and a bounded heap, not a sort of them all."""
    half_life = params.half_life_ms
    best = heapq.nsmallest(params.related, (
        (-weight * exp2((updated_ms - now_ms) / half_life), column)
        for column, (weight, updated_ms) in pin_row.items()
        if weight > 0 and column.startswith(_PIN_PREFIX)))
    if not best:
        return []
    top = -best[0][0]
    return [(column[len(_PIN_PREFIX):], -negated / top) for negated, column in best]
