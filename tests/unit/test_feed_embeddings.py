"""Feeds ranked with the embeddings and similar pins of a real ANN index (the worker's source):
vectors and cosines read from the index, the taste vector, the shortlist, and the degraded paths
(some pins without an embedding, none, the index not open yet)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from processors.feed import FeedComputer, FeedParams, Neighbours
from processors.feed_embeddings import LiveIndex
from processors.ranking import RankParams
from processors.walks import WalkParams
from sinks.faiss import IndexKind, VectorIndex
from streams.events import Fallback, NodeType
from streams.metrics import REGISTRY

DIM = 32
BOARD_PINS = [f"a{i}" for i in range(30)]


class Graph:
    """A user who saved q1 and q2 (board A), and 30 more pins on board A."""

    rows: dict[NodeType, dict[str, dict[NodeType, dict[str, float]]]] = {
        NodeType.USER: {"u1": {NodeType.PIN: {"q1": 4.0, "q2": 2.0}}},
        NodeType.PIN: {"q1": {NodeType.BOARD: {"A": 1.0}}, "q2": {NodeType.BOARD: {"A": 1.0}}},
        NodeType.BOARD: {"A": {NodeType.PIN: {"q1": 1.0, "q2": 1.0, **{p: 1.0 for p in BOARD_PINS}}}},
    }

    def neighbours(self, node_type: NodeType, node_ids: Sequence[str]) -> dict[str, Neighbours]:
        return {n: self.rows[node_type][n] for n in node_ids if n in self.rows[node_type]}


def index_of(pins: Sequence[str], kind: IndexKind = IndexKind.FLAT) -> VectorIndex:
    index = VectorIndex("m1", DIM, kind=kind)
    rng = np.random.default_rng(5)
    if pins:
        index.upsert_many(list(pins), rng.standard_normal((len(pins), DIM)).astype(np.float32))
    return index


def feeds(index: VectorIndex | None, *, shortlist: int = 2000, size: int = 10) -> FeedComputer:
    return FeedComputer(Graph(), embeddings=LiveIndex(lambda: index), similar=LiveIndex(lambda: index),
                        params=FeedParams(rank=RankParams(size=size, embedding_weight=0.5),
                                          walk=WalkParams(steps=2000), deadline_s=60.0,
                                          embedding_shortlist=shortlist))


def test_the_index_returns_vectors_and_cosines_of_the_pins_it_holds() -> None:
    index = index_of(["p1", "p2", "p3"])
    vectors = index.vectors(["p3", "missing", "p1"])
    assert set(vectors) == {"p1", "p3"}
    query = vectors["p1"]
    sims, found = index.cosine(["p1", "missing", "p3"], query)
    assert found.tolist() == [True, False, True]
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert sims[1] == 0.0
    assert sims[2] == pytest.approx(float(np.dot(vectors["p3"], query)), abs=1e-5)


def test_all_pins_embedded_rank_with_the_pinsage_score() -> None:
    result = feeds(index_of(["q1", "q2", *BOARD_PINS, "lookalike"])).compute("u1")
    assert Fallback.NO_EMBEDDINGS not in result.fallbacks
    assert result.model == "pixie-pinsage-1"
    assert len(result.items) == 10


def test_visually_similar_pins_from_the_index_become_candidates() -> None:
    # "lookalike" is on no board: only the ANN search of the taste vector can bring it in.
    index = index_of(["q1", "q2", *BOARD_PINS])
    taste = FeedComputer(Graph(), embeddings=LiveIndex(lambda: index)).taste_of("u1")
    assert taste is not None
    index.upsert("lookalike", taste)
    result = feeds(index, shortlist=5, size=40).compute("u1")
    assert "lookalike" in {item.pin_id for item in result.items}
    walks_only = FeedComputer(Graph(), params=feeds(index, size=40).params).compute("u1")
    assert "lookalike" not in {item.pin_id for item in walks_only.items}
    assert {item.reason for item in result.items if item.pin_id == "lookalike"} == {"similar"}


def test_pins_without_an_embedding_rank_by_walks_and_the_share_is_measured() -> None:
    before = REGISTRY.get_sample_value("pinstream_feed_embedded_share_count") or 0.0
    result = feeds(index_of(["q1", "q2", *BOARD_PINS[:10]])).compute("u1")
    assert Fallback.NO_EMBEDDINGS not in result.fallbacks
    assert len(result.items) == 10
    assert REGISTRY.get_sample_value("pinstream_feed_embedded_share_count") == before + 1
    embedded = REGISTRY.get_sample_value("pinstream_feed_embedded_share_bucket", {"le": "0.5"})
    assert embedded is not None and embedded >= 1  # 10 of the 30 candidates had one


@pytest.mark.parametrize("index", [None, "empty", "others"])
def test_no_embedding_of_the_users_pins_is_the_named_degraded_path(index: str | None) -> None:
    live = None if index is None else index_of([] if index == "empty" else BOARD_PINS)
    result = feeds(live).compute("u1")
    assert Fallback.NO_EMBEDDINGS in result.fallbacks
    assert result.model == "pixie-1"
    assert len(result.items) == 10


def test_the_shortlist_caps_the_vectors_read(monkeypatch: pytest.MonkeyPatch) -> None:
    index = index_of(["q1", "q2", *BOARD_PINS])
    asked: list[int] = []
    original = index.cosine

    def counting(pin_ids: Sequence[str], query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        asked.append(len(pin_ids))
        return original(pin_ids, query)

    monkeypatch.setattr(index, "cosine", counting)
    for shortlist in (7, 2000):
        FeedComputer(Graph(), embeddings=LiveIndex(lambda: index),
                     params=feeds(index, shortlist=shortlist).params).compute("u1")
    assert asked == [7, len(BOARD_PINS) + 2]  # the shortlist; every candidate and visited pin


def test_the_ivf_index_serves_the_same_lookups() -> None:
    pins = [f"p{i}" for i in range(3000)]  # enough to train 64 lists
    index = index_of(pins, IndexKind.IVF_SQ8)
    assert index.kind is IndexKind.IVF_SQ8
    vectors = index.vectors(pins[:3])
    sims, found = index.cosine(pins[:3], vectors[pins[0]] / np.linalg.norm(vectors[pins[0]]))
    assert found.all()
    assert sims[0] == pytest.approx(1.0, abs=0.02)
