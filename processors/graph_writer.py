"""The graph stage's single-writer rule, enforced: a worker claims a writer epoch (an atomic HBase
increment) when it starts, and checks before every graph write that no newer writer has claimed
one since; a fenced writer stops, so two workers never write graph rows from stale caches."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from prometheus_client import Gauge

from streams.errors import ProcessingError
from streams.metrics import REGISTRY

log = logging.getLogger(__name__)

GRAPH_WRITER_EPOCH = Gauge("pinstream_graph_writer_epoch",
                           "Writer epoch this worker's graph stage holds (0: fenced by a newer one).",
                           registry=REGISTRY)


class EpochStore(Protocol):
    def claim_writer(self) -> int: ...

    def writer_epoch(self) -> int: ...


class GraphWriterFenced(ProcessingError):
    """A newer graph writer started: this one must stop writing (the worker exits)."""

    def __init__(self, held: int, newest: int) -> None:
        super().__init__(f"graph writer epoch {held} fenced by epoch {newest}: another worker writes "
                         "the graph now; this one stops", stage="graph", reason="fenced")
        self.held = held
        self.newest = newest


class WriterLease:
    """Claims an epoch at construction. The first write waits `grace_s` after the claim, so that
    a write the previous writer had already checked and started has landed before ours."""

    def __init__(self, store: EpochStore, *, grace_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.epoch = store.claim_writer()
        self.grace_s = grace_s
        self._claimed_at = clock()
        self._clock = clock
        self._sleep = sleep
        self._waited = False
        GRAPH_WRITER_EPOCH.set(self.epoch)
        log.info("graph writer epoch %d claimed", self.epoch)

    def check(self) -> None:
        """Raises GraphWriterFenced when a newer epoch was claimed; call before each write."""
        if not self._waited:
            remaining = self._claimed_at + self.grace_s - self._clock()
            if remaining > 0:
                self._sleep(remaining)
            self._waited = True
        newest = self.store.writer_epoch()
        if newest != self.epoch:
            GRAPH_WRITER_EPOCH.set(0)
            raise GraphWriterFenced(self.epoch, newest)
        GRAPH_WRITER_EPOCH.set(self.epoch)
