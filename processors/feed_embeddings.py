"""The worker's live ANN index as the feed's source of pin embeddings and of visually similar pins;
while the index is not open yet, every call is a SinkError and feeds rank by walks alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from processors.ranking import BoolArray, Vector
from processors.walks import FloatArray
from sinks.faiss import SearchHit, VectorIndex
from streams.errors import SinkError


class LiveIndex:
    """`current()` gives the index the worker serves now (it is replaced on a rebuild), or None."""

    def __init__(self, current: Callable[[], VectorIndex | None]) -> None:
        self.current = current

    def _index(self) -> VectorIndex:
        index = self.current()
        if index is None:
            raise SinkError("the ANN index is not open yet", dependency="faiss", retry_after=1.0)
        return index

    def vectors(self, pin_ids: Sequence[str]) -> dict[str, Vector]:
        return self._index().vectors(pin_ids)

    def cosine(self, pin_ids: Sequence[str], query: Vector) -> tuple[FloatArray, BoolArray]:
        return self._index().cosine(pin_ids, query)

    def search(self, queries: Vector, k: int) -> list[list[SearchHit]]:
        index = self._index()
        if len(index) == 0:
            return [[] for _ in range(np.atleast_2d(queries).shape[0])]
        return index.search(queries, k)
