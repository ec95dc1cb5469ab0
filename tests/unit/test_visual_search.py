"""Visual search with fakes of our interfaces: ranking by similarity, threshold, metadata, and
each fallback saying what served the answer."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from PIL import Image

from processors.search import VisualSearch
from sinks.faiss import IndexKind, VectorIndex
from streams.errors import ProcessingError, SinkError
from streams.settings import load_settings

DIM = 8


class FakeBatcher:
    def __init__(self, vector: np.ndarray[Any, Any] | None = None, *, delay: float = 0.0,
                 error: Exception | None = None) -> None:
        self.vector, self.delay, self.error = vector, delay, error

    async def submit(self, item: Any) -> Any:
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.vector


class FakePins:
    def __init__(self, down: bool = False) -> None:
        self.down = down

    def get_pins(self, pin_ids: Sequence[str]) -> Mapping[str, Any]:
        if self.down:
            raise SinkError("thrift down", dependency="hbase")
        return {p: {"title": f"title of {p}"} for p in pin_ids}


class FakeText:
    def match_text(self, text: str, limit: int) -> list[str]:
        return ["t1", "t2"][:limit]


class FakeTrending:
    def __init__(self, down: bool = False) -> None:
        self.down = down

    def trending(self, limit: int) -> list[tuple[str, float]]:
        if self.down:
            raise SinkError("redis down", dependency="redis")
        return [("t2", 9.0), ("hot1", 7.5), ("hot2", 3.0), ("hot3", 1.0)][:limit]


def _unit(values: list[float]) -> np.ndarray[Any, Any]:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 40), (90, 20, 200)).save(out, "JPEG")
    return out.getvalue()


def _search(batcher: FakeBatcher, pins: FakePins | None = None,
            trending: FakeTrending | None = None, **settings: Any) -> VisualSearch:
    index = VectorIndex("v1", DIM, kind=IndexKind.FLAT)
    index.upsert("near", _unit([1, 0.1, 0, 0, 0, 0, 0, 0]))
    index.upsert("nearer", _unit([1, 0.01, 0, 0, 0, 0, 0, 0]))
    index.upsert("far", _unit([0, 0, 0, 0, 0, 0, 1, 1]))
    return VisualSearch(load_settings(metrics_port=0, **settings), index=lambda: index,
                        batcher=batcher,  # type: ignore[arg-type]
                        pins=pins or FakePins(), model_version="v1", text=FakeText(),
                        trending=trending)


def test_hits_are_ranked_by_similarity_above_the_threshold_with_metadata() -> None:
    search = _search(FakeBatcher(_unit([1, 0, 0, 0, 0, 0, 0, 0])), search_min_cosine=0.5)
    answer = asyncio.run(search.search(_jpeg(), k=10))
    assert [h.pin_id for h in answer.hits] == ["nearer", "near"]  # "far" is below the threshold
    assert answer.fallback is None and answer.hits[0].metadata == {"title": "title of nearer"}
    assert set(answer.timings_ms) >= {"decode", "embed", "ann", "metadata", "total"}


def test_embedding_timeout_is_answered_by_the_text_fallback_and_says_so() -> None:
    search = _search(FakeBatcher(delay=0.5), search_embed_timeout_s=0.05)
    answer = asyncio.run(search.search(_jpeg(), k=5, text="blue lamp"))
    assert answer.fallback == "embed_timeout; served by text_match"
    assert [h.pin_id for h in answer.hits] == ["t1", "t2"]


def test_embedding_failure_without_text_says_nothing_served() -> None:
    failure = ProcessingError("model crashed", stage="embed", reason="model_error")
    answer = asyncio.run(_search(FakeBatcher(error=failure)).search(_jpeg(), k=5))
    assert answer.fallback == "embed_failed:model_error; served by none" and answer.hits == []


def test_text_matches_come_first_then_trending_fills_up_to_k_without_repeats() -> None:
    search = _search(FakeBatcher(delay=0.5), trending=FakeTrending(), search_embed_timeout_s=0.05)
    answer = asyncio.run(search.search(_jpeg(), k=4, text="blue lamp"))
    assert answer.fallback == "embed_timeout; served by text_match+trending"
    assert [h.pin_id for h in answer.hits] == ["t1", "t2", "hot1", "hot2"]
    assert answer.hits[2].score == 7.5 and answer.hits[2].metadata == {"title": "title of hot1"}


def test_without_text_trending_serves_and_a_trending_outage_serves_nothing() -> None:
    failure = ProcessingError("model crashed", stage="embed", reason="model_error")
    answer = asyncio.run(_search(FakeBatcher(error=failure), trending=FakeTrending()).search(_jpeg(), k=2))
    assert answer.fallback == "embed_failed:model_error; served by trending"
    assert [h.pin_id for h in answer.hits] == ["t2", "hot1"]
    down = _search(FakeBatcher(error=failure), trending=FakeTrending(down=True))
    answer = asyncio.run(down.search(_jpeg(), k=2))
    assert answer.fallback == "embed_failed:model_error; served by none" and answer.hits == []


def test_metadata_outage_still_returns_ranked_pins_and_says_so() -> None:
    search = _search(FakeBatcher(_unit([1, 0, 0, 0, 0, 0, 0, 0])), FakePins(down=True))
    answer = asyncio.run(search.search(_jpeg(), k=10))
    assert answer.fallback == "metadata_unavailable"
    assert [h.pin_id for h in answer.hits][:1] == ["nearer"] and answer.hits[0].metadata == {}


def test_undecodable_query_image_is_the_callers_error() -> None:
    with pytest.raises(ProcessingError) as info:
        asyncio.run(_search(FakeBatcher()).search(b"not an image"))
    assert info.value.reason == "not_an_image"
