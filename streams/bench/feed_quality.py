"""`pinstream bench feed-quality`: HR@10, HR@50 and MRR of home feeds on the planted-interest
workload (last engaged pins held out) against popularity and random, and ranker latency per feed."""

from __future__ import annotations

import dataclasses
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.feed import FeedComputer, FeedParams
from processors.ranking import RankParams
from streams.bench.feed_workload import (
    START,
    GraphWeights,
    MemoryGraph,
    Popularity,
    Split,
    build_graph,
    split_last_positives,
    synthetic_embeddings,
)
from streams.bench.report import code_revision, machine_info, percentile
from streams.events import NodeType
from streams.settings import Settings
from streams.workload.population import World, build_world
from streams.workload.sessions import iter_interactions

GOAL_POPULARITY_RATIO = 3.0
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Workload:
    users: int = 500
    pins: int = 5000
    clusters: int = 16
    boards_per_user: int = 3
    days: int = 14
    sessions_per_user: float = 10.0
    held_out: int = 3
    seed: int = 7
    dim: int = 1280
    impression_weight: float | None = None  # None: the graph_weight_impression setting


@dataclass
class Scores:
    """Hit rates and MRR of one method over the evaluated users, plus per-feed latency."""

    name: str
    hits10: int = 0
    hits50: int = 0
    reciprocal: float = 0.0
    users: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    fallbacks: dict[str, int] = field(default_factory=dict)
    reasons_top10: dict[str, int] = field(default_factory=dict)

    def add(self, ranked: Sequence[str], targets: frozenset[str]) -> None:
        self.users += 1
        rank = next((i + 1 for i, pin in enumerate(ranked) if pin in targets), None)
        if rank is not None:
            self.hits10 += rank <= 10
            self.hits50 += rank <= 50
            self.reciprocal += 1.0 / rank

    def to_json(self) -> dict[str, Any]:
        latency = ({f"p{q}": percentile(self.latencies_ms, q) for q in (50, 90, 99)}
                   if self.latencies_ms else {})
        return {"method": self.name, "users": self.users, "hr@10": self.hr(10), "hr@50": self.hr(50),
                "mrr": self.mrr(), "latency_ms": latency, "fallbacks": self.fallbacks,
                "reasons_top10": self.reasons_top10}

    def hr(self, k: int) -> float:
        return (self.hits10 if k == 10 else self.hits50) / self.users if self.users else 0.0

    def mrr(self) -> float:
        return self.reciprocal / self.users if self.users else 0.0


@dataclass
class QualityResult:
    workload: Workload
    params: FeedParams
    methods: list[Scores]
    events: int
    train_events: int
    evaluated_users: int
    cold_users: int
    mean_candidates: float
    build_s: float

    def method(self, name: str) -> Scores:
        return next(m for m in self.methods if m.name == name)

    def to_json(self, command: str) -> dict[str, Any]:
        popularity = self.method("popularity").hr(10)
        ours = self.methods[0].hr(10)
        return {
            "bench": "feed-quality", "command": command, "revision": code_revision(),
            "workload": dataclasses.asdict(self.workload),
            "params": _params_json(self.params),
            "events": self.events, "train_events": self.train_events,
            "evaluated_users": self.evaluated_users, "cold_users": self.cold_users,
            "mean_candidates": self.mean_candidates, "graph_build_s": self.build_s,
            "methods": [m.to_json() for m in self.methods],
            "hr10_vs_popularity": ours / popularity if popularity else None,
            "goal_hr10_vs_popularity": GOAL_POPULARITY_RATIO,
            "machine": machine_info(["numpy"]),
        }


def _rank_with(name: str, computer: FeedComputer, split: Split, repeat_latency: int) -> tuple[Scores, float]:
    scores = Scores(name)
    candidates = []
    for user, targets in sorted(split.targets.items()):
        for _ in range(repeat_latency):
            result = computer.compute(user)
            scores.latencies_ms.append(result.timings_ms["total"])
        candidates.append(result.candidates)
        for fallback in result.fallbacks:
            scores.fallbacks[str(fallback)] = scores.fallbacks.get(str(fallback), 0) + 1
        for item in result.items[:10]:
            kind = item.reason.split(":")[0]
            scores.reasons_top10[kind] = scores.reasons_top10.get(kind, 0) + 1
        scores.add([item.pin_id for item in result.items], targets)
    return scores, statistics.fmean(candidates) if candidates else 0.0


def run_feed_quality(workload: Workload, params: FeedParams, settings: Settings, *,
                     repeat_latency: int = 1, progress: Progress = lambda _: None) -> QualityResult:
    """Build the world and graph, rank every evaluated user's feed three ways, and the baselines."""
    progress("generating interactions...")
    world = build_world(workload.seed, workload.users, workload.pins, workload.clusters,
                        workload.boards_per_user)
    events = list(iter_interactions(world, start=START, days=workload.days,
                                    sessions_per_user=workload.sessions_per_user))
    split = split_last_positives(events, workload.held_out)
    weights = GraphWeights.from_settings(settings, impression=workload.impression_weight)
    started = time.perf_counter()
    graph = build_graph(world, split.train, split.end_ms, weights)
    build_s = time.perf_counter() - started
    popularity = Popularity(split.train, weights)
    embeddings = synthetic_embeddings(world, workload.dim, workload.seed)
    no_embedding_params = FeedParams(rank=params.rank, walk=params.walk, deadline_s=params.deadline_s,
                                     seed=params.seed)
    variants = [
        ("walks + embeddings", FeedComputer(graph, embeddings=embeddings, trending=popularity,
                                            params=params)),
        ("walks only", FeedComputer(graph, trending=popularity, params=no_embedding_params)),
        ("co-engagement (deadline fallback)", FeedComputer(
            graph, trending=popularity, params=FeedParams(rank=params.rank, walk=params.walk,
                                                          deadline_s=-1.0))),
    ]
    methods: list[Scores] = []
    mean_candidates = 0.0
    for name, computer in variants:
        progress(f"ranking: {name}...")
        scores, candidates = _rank_with(name, computer, split, repeat_latency if not methods else 1)
        mean_candidates = mean_candidates or candidates
        methods.append(scores)
    progress("baselines...")
    methods.extend(_baselines(graph, popularity, split, world, params.rank, workload.seed))
    cold = sum(1 for user in split.targets if not _has_positive(graph, user))
    return QualityResult(workload, params, methods, len(events), len(split.train), len(split.targets),
                         cold, mean_candidates, build_s)


def _has_positive(graph: MemoryGraph, user: str) -> bool:
    row = graph.rows[NodeType.USER].get(user, {}).get(NodeType.PIN, {})
    return any(w > 0 for w in row.values())


def _baselines(graph: MemoryGraph, popularity: Popularity, split: Split, world: World, rank: RankParams,
               seed: int) -> list[Scores]:
    """Popularity and random, excluding what the ranker excludes (engaged and hidden pins)."""
    popular, uniform = Scores("popularity"), Scores("random")
    rng = random.Random(seed)
    all_pins = [p.pin_id for p in world.pins]
    for user, targets in sorted(split.targets.items()):
        row = graph.rows[NodeType.USER].get(user, {}).get(NodeType.PIN, {})
        exclude = {p for p, w in row.items() if w >= rank.min_engaged_weight or w < 0}
        popular.add([p for p, _ in popularity.ranked if p not in exclude][:rank.size], targets)
        drawn = rng.sample(all_pins, min(len(all_pins), rank.size + len(exclude)))
        uniform.add([p for p in drawn if p not in exclude][:rank.size], targets)
    return [popular, uniform]


def _params_json(params: FeedParams) -> dict[str, Any]:
    return {"rank": dataclasses.asdict(params.rank), "walk": dataclasses.asdict(params.walk),
            "deadline_s": params.deadline_s, "seed": params.seed}


@dataclass
class LatencyResult:
    """Ranker latency on the heaviest users of a bigger world (neighbourhoods near 10k pins)."""

    workload: Workload
    events: int
    feeds: int
    candidates: list[int]
    total_ms: list[float]
    stages_ms: dict[str, list[float]]
    fallbacks: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        def summary(values: Sequence[float]) -> dict[str, float]:
            return {f"p{q}": percentile(values, q) for q in (50, 90, 99)} | {"max": max(values)}

        return {"workload": dataclasses.asdict(self.workload), "events": self.events, "feeds": self.feeds,
                "candidates": summary(self.candidates), "total_ms": summary(self.total_ms),
                "stages_ms": {k: summary(v) for k, v in self.stages_ms.items() if v},
                "fallbacks": self.fallbacks}


def run_feed_latency(workload: Workload, params: FeedParams, settings: Settings, feeds: int, *,
                     progress: Progress = lambda _: None) -> LatencyResult:
    """Feeds of the `feeds` most active users (the largest neighbourhoods), timed one by one."""
    progress(f"latency: generating {workload.users:,} users, {workload.pins:,} pins...")
    world = build_world(workload.seed, workload.users, workload.pins, workload.clusters,
                        workload.boards_per_user)
    events = list(iter_interactions(world, start=START, days=workload.days,
                                    sessions_per_user=workload.sessions_per_user))
    progress(f"latency: building the graph of {len(events):,} interactions...")
    weights = GraphWeights.from_settings(settings, impression=workload.impression_weight)
    graph = build_graph(world, events, events[-1].event_time_ms, weights)
    computer = FeedComputer(graph, embeddings=synthetic_embeddings(world, workload.dim, workload.seed),
                            trending=Popularity(events, weights), params=params)
    heaviest = sorted(world.users, key=lambda u: (-u.activity, u.user_id))[:feeds]
    result = LatencyResult(workload, len(events), len(heaviest), [], [], {}, {})
    for index, user in enumerate(heaviest):
        if index % 50 == 0:
            progress(f"latency: feed {index + 1}/{len(heaviest)}...")
        feed = computer.compute(user.user_id)
        result.candidates.append(feed.candidates)
        result.total_ms.append(feed.timings_ms["total"])
        for stage in ("fetch", "candidates", "walk", "score"):
            if stage in feed.timings_ms:
                result.stages_ms.setdefault(stage, []).append(feed.timings_ms[stage])
        for fallback in feed.fallbacks:
            result.fallbacks[str(fallback)] = result.fallbacks.get(str(fallback), 0) + 1
    return result


QUALITY_COLUMNS = ("method", "HR@10", "HR@50", "MRR", "HR@10 / popularity", "feed p50", "feed p99",
                   "fallbacks")
LATENCY_COLUMNS = ("candidates p50 / max", "feed p50", "p90", "p99", "max", "graph build p50",
                   "walk p50", "score p50", "deadline -> cf")


def quality_rows(result: QualityResult) -> list[list[str]]:
    popularity = result.method("popularity").hr(10)
    rows = []
    for m in result.methods:
        latency = m.to_json()["latency_ms"]
        timing = [f"{latency[q]:.1f} ms" if latency else "-" for q in ("p50", "p99")]
        rows.append([m.name, f"{m.hr(10):.3f}", f"{m.hr(50):.3f}", f"{m.mrr():.3f}",
                     f"{m.hr(10) / popularity:.1f}x" if popularity else "-", *timing,
                     ", ".join(f"{k} {v}" for k, v in sorted(m.fallbacks.items())) or "-"])
    return rows


def latency_rows(result: LatencyResult) -> list[list[str]]:
    data = result.to_json()
    total, stages = data["total_ms"], data["stages_ms"]
    return [[f"{data['candidates']['p50']:,.0f} / {data['candidates']['max']:,.0f}",
             *(f"{total[q]:.1f} ms" for q in ("p50", "p90", "p99", "max")),
             *(f"{stages[s]['p50']:.1f} ms" if s in stages else "-" for s in ("candidates", "walk", "score")),
             f"{result.fallbacks.get('RANKER_TIMEOUT_CF', 0)} / {result.feeds}"]]
