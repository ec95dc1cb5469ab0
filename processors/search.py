"""Visual search: image -> embedding -> ANN shortlist -> cosine threshold -> re-rank -> metadata.

When feature extraction fails or misses its deadline (or the index is not loaded yet), the answer
comes from the fallback and says so: pins whose title or description match the caller's text
first, then trending pins (the decayed popularity set kept from interactions) up to k.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from prometheus_client import Counter, Histogram

from processors.batching import MicroBatcher
from processors.images import ImageLimits, decode_image
from sinks.faiss import VectorIndex
from streams.errors import PinstreamError, ProcessingError, SinkError
from streams.metrics import REGISTRY
from streams.settings import Settings

log = logging.getLogger(__name__)

SEARCH_SECONDS = Histogram(
    "pinstream_visual_search_seconds", "Visual search stages: decode, embed, ann, metadata, total.",
    ["stage"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0),
    registry=REGISTRY,
)
SEARCH_FALLBACKS = Counter("pinstream_visual_search_fallbacks_total",
                           "Visual searches answered by a fallback, by reason.", ["reason"],
                           registry=REGISTRY)

Vector = np.ndarray[Any, np.dtype[np.float32]]
TasteFn = Callable[[str], Vector | None]


class PinLookup(Protocol):
    """Metadata by pin id (the HBase pin store)."""

    def get_pins(self, pin_ids: Sequence[str]) -> Mapping[str, Any]: ...


class TextFallback(Protocol):
    def match_text(self, text: str, limit: int) -> list[str]: ...


class TrendingFallback(Protocol):
    """The trending set (Redis): (pin id, decayed popularity), most popular first."""

    def trending(self, limit: int) -> list[tuple[str, float]]: ...


@dataclass(frozen=True)
class SearchHit:
    pin_id: str
    score: float
    similarity: float
    metadata: dict[str, Any]


@dataclass
class SearchResponse:
    hits: list[SearchHit]
    model_version: str
    fallback: str | None = None  # why the primary path did not answer, when it did not
    reranked_by: str = "similarity"
    timings_ms: dict[str, float] = field(default_factory=dict)
    candidates: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version, "fallback": self.fallback,
            "reranked_by": self.reranked_by, "candidates": self.candidates,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "hits": [{"pin_id": h.pin_id, "score": round(h.score, 5),
                      "similarity": round(h.similarity, 5), **h.metadata} for h in self.hits],
        }


def metadata_dict(record: Any) -> dict[str, Any]:
    """JSON-safe metadata of a stored pin, without its embedding."""
    if record is None:
        return {}
    raw = record if isinstance(record, Mapping) else {
        name: getattr(record, name) for name in getattr(record, "__dataclass_fields__", {})}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("embedding", "vector") or isinstance(value, bytes | np.ndarray):
            continue
        if hasattr(value, "isoformat"):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        out[key] = value
    return out


class VisualSearch:
    """The query path of visual search, sharing the worker's embedder through its micro-batcher."""

    def __init__(self, settings: Settings, *, index: Callable[[], VectorIndex | None],
                 batcher: MicroBatcher[Any, Any], pins: PinLookup, model_version: str,
                 taste: TasteFn | None = None, text: TextFallback | None = None,
                 trending: TrendingFallback | None = None) -> None:
        self.settings = settings
        self.limits = ImageLimits.from_settings(settings)
        self._index = index
        self.batcher = batcher
        self.pins = pins
        self.model_version = model_version
        self.taste = taste
        self.text = text
        self.trending = trending

    async def search(self, image: bytes, *, k: int = 100, user_id: str | None = None,
                     text: str | None = None) -> SearchResponse:
        """Raises ProcessingError for an image that cannot be decoded (the caller's error)."""
        started = time.perf_counter()
        timings: dict[str, float] = {}
        decoded = await asyncio.to_thread(decode_image, image, self.limits)
        timings["decode"] = _lap(started, "decode")
        try:
            vector = await asyncio.wait_for(self.batcher.submit(decoded),
                                            timeout=self.settings.search_embed_timeout_s)
        except (TimeoutError, ProcessingError) as exc:
            reason = "embed_timeout" if isinstance(exc, TimeoutError) else f"embed_failed:{exc.reason}"
            return await self._fallback(reason, text, k, timings, started)
        timings["embed"] = _lap(started, "embed") - timings["decode"]
        index = self._index()
        if index is None:
            return await self._fallback("index_not_ready", text, k, timings, started)
        mark = time.perf_counter()
        (hits,) = index.search(np.asarray(vector, dtype=np.float32),
                               min(self.settings.search_shortlist, max(len(index), 1)),
                               min_score=self.settings.search_min_cosine)
        timings["ann"] = (time.perf_counter() - mark) * 1000
        SEARCH_SECONDS.labels("ann").observe(timings["ann"] / 1000)
        # Off the event loop: the taste vector and the hits' embeddings are store reads.
        ranked, how = await asyncio.to_thread(self._rerank, [(h.pin_id, h.score) for h in hits], user_id)
        ranked = ranked[:k]
        response = SearchResponse([], self.model_version, None, how, timings, len(hits))
        await self._attach_metadata(response, ranked, timings)
        timings["total"] = _lap(started, "total")
        return response

    def _rerank(self, hits: list[tuple[str, float]], user_id: str | None
                ) -> tuple[list[tuple[str, float, float]], str]:
        """(pin, score, similarity) best first: by similarity, or blended with the user's taste."""
        taste = self.taste(user_id) if (user_id and self.taste) else None
        if taste is None or not hits:
            return [(p, s, s) for p, s in hits], "similarity"
        records = self.pins.get_pins([p for p, _ in hits])
        blended = []
        for pin_id, similarity in hits:
            vector = getattr(records.get(pin_id), "embedding", None)
            affinity = float(np.dot(vector, taste)) if vector is not None else 0.0
            blended.append((pin_id, 0.7 * similarity + 0.3 * affinity, similarity))
        blended.sort(key=lambda row: row[1], reverse=True)
        return blended, "similarity+taste"

    async def _attach_metadata(self, response: SearchResponse, ranked: list[tuple[str, float, float]],
                               timings: dict[str, float]) -> None:
        mark = time.perf_counter()
        try:
            records = await asyncio.to_thread(self.pins.get_pins, [p for p, _, _ in ranked])
        except SinkError as exc:
            # Results without metadata beat no results; the response says what is missing.
            log.warning("visual search: metadata unavailable: %s", exc)
            records, response.fallback = {}, "metadata_unavailable"
        timings["metadata"] = (time.perf_counter() - mark) * 1000
        SEARCH_SECONDS.labels("metadata").observe(timings["metadata"] / 1000)
        response.hits = [SearchHit(p, s, sim, metadata_dict(records.get(p))) for p, s, sim in ranked]

    async def _fallback(self, reason: str, text: str | None, k: int, timings: dict[str, float],
                        started: float) -> SearchResponse:
        SEARCH_FALLBACKS.labels(reason.split(":")[0]).inc()
        ranked: list[tuple[str, float, float]] = []
        sources: list[str] = []
        if text and self.text is not None:
            try:
                matched = await asyncio.to_thread(self.text.match_text, text, k)
            except PinstreamError as exc:
                log.warning("visual search: text fallback failed: %s", exc)
            else:
                ranked = [(p, 0.0, 0.0) for p in matched]
                sources.append("text_match")
        if len(ranked) < k and self.trending is not None:
            try:
                popular = await asyncio.to_thread(self.trending.trending, k + len(ranked))
            except PinstreamError as exc:
                log.warning("visual search: trending fallback failed: %s", exc)
            else:
                seen = {p for p, _, _ in ranked}
                filler = [(p, score, 0.0) for p, score in popular if p not in seen][: k - len(ranked)]
                if filler:
                    ranked.extend(filler)
                    sources.append("trending")
        how = "+".join(sources) or "none"
        response = SearchResponse([], self.model_version, f"{reason}; served by {how}", how, timings)
        await self._attach_metadata(response, ranked, timings)
        timings["total"] = _lap(started, "total")
        return response


def _lap(started: float, stage: str) -> float:
    elapsed = time.perf_counter() - started
    SEARCH_SECONDS.labels(stage).observe(elapsed)
    return elapsed * 1000
