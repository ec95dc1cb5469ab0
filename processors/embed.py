"""The pin-creation stage: PinCreated batches -> image -> embedding -> HBase row + PinEmbedding.

Plain functions and one small class; the faust agent in `streams/app.py` only feeds it batches.
Every pin ends in exactly one of: embedded and stored; stored without visual features with a
dead letter (bad image: retrying cannot help) or a reconciliation record (model or store failure:
retry later). Nothing is dropped, and the agent acknowledges a batch only after this returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from PIL import Image

from processors import embed_metrics
from processors.batching import MicroBatcher
from processors.images import ImageLimits, decode_image, load_image_bytes
from streams.blobs import BlobStore
from streams.codec import AvroCodec
from streams.deadletter import RawRecord
from streams.errors import ContractError, PinstreamError, ProcessingError, SinkError
from streams.events import PinCreated, PinEmbedding, Stage
from streams.settings import Settings

log = logging.getLogger(__name__)

# Image problems that no retry can fix: the pin is stored without visual features and the
# record is dead-lettered with the reason. Anything else (model error, timeout) is retried later.
PERMANENT_REASONS = frozenset({
    "empty_image", "not_an_image", "corrupt_image", "unsupported_format", "image_too_large",
    "too_many_pixels", "unknown_blob", "invalid_blob_key", "no_image", "url_refused",
    "url_fetch_disabled", "image_too_small",
})


class EmbedderLike(Protocol):
    model_id: str
    model_version: str

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray[Any, np.dtype[np.float32]]: ...


class PinStoreLike(Protocol):
    def write_pins(self, pins: Sequence[PinCreated]) -> None: ...

    def write_embeddings(self, embeddings: Sequence[PinEmbedding]) -> None: ...

    def mark_pending_embedding(self, pin_id: str, reason: str, *, at: datetime | None = None) -> None: ...


class Outbox(Protocol):
    """Where the stage's records go: embeddings, dead letters, reconciliations (Kafka in the worker)."""

    def embedding(self, event: PinEmbedding, source: RawRecord) -> None: ...

    def dead_letter(self, record: RawRecord, reason: str, error: str) -> None: ...

    def reconcile(self, stage: Stage, pin: PinCreated, dependency: str, error: Exception,
                  source: RawRecord) -> None: ...

    async def settle(self) -> None:
        """Wait until every record above is acknowledged; raise if one is not."""
        ...


@dataclass
class BatchReport:
    received: int = 0
    embedded: int = 0
    stored: int = 0
    dead_lettered: int = 0
    reconciliations: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def count(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


Vector = np.ndarray[Any, np.dtype[np.float32]]


def make_batch_function(embedder: EmbedderLike, blobs: BlobStore, settings: Settings
                        ) -> Callable[[list[PinCreated | Image.Image]], list[Vector | BaseException]]:
    """The function the micro-batcher runs in its worker thread: load, decode, embed a batch of
    pins (and decoded query images); one entry per item, its vector or the ProcessingError."""
    limits = ImageLimits.from_settings(settings)

    def run(items: list[PinCreated | Image.Image]) -> list[Vector | BaseException]:
        outcomes: list[Vector | BaseException] = []
        images: list[Image.Image] = []
        slots: list[int] = []
        for item in items:
            started = time.perf_counter()
            try:
                # Visual-search queries arrive decoded; pins carry a reference to their image.
                image = item if isinstance(item, Image.Image) else decode_image(
                    load_image_bytes(item, blobs, settings), limits)
            except ProcessingError as exc:
                embed_metrics.FAILURES.labels(exc.reason or "unknown").inc()
                outcomes.append(exc)
                continue
            embed_metrics.STAGE_SECONDS.labels("decode").observe(time.perf_counter() - started)
            slots.append(len(outcomes))
            outcomes.append(ProcessingError("not embedded", stage="embed", reason="pending"))
            images.append(image)
        if images:
            started = time.perf_counter()
            try:
                vectors = embedder.embed(images)
            except Exception as exc:  # a model failure must not lose the batch's pins
                error = ProcessingError(f"inference failed: {exc}", stage="embed", reason="model_error")
                for slot in slots:
                    outcomes[slot] = error
                embed_metrics.FAILURES.labels("model_error").inc(len(slots))
                return outcomes
            embed_metrics.STAGE_SECONDS.labels("inference").observe(time.perf_counter() - started)
            for slot, vector in zip(slots, vectors, strict=True):
                outcomes[slot] = vector
        return outcomes

    return run


class ImageDecoder:
    """Loads (inline, blob store or URL) and decodes pin images in a pool of its own, ahead of the
    micro-batcher: the next pins decode while the current batch is in inference, which leaves
    part of the cores idle between layers, and a slow URL fetch never holds up the model thread.
    The pool is bounded; the stage never has more pins in flight than the agent's batch.
    """

    def __init__(self, blobs: BlobStore, settings: Settings, *, threads: int = 2) -> None:
        if threads < 1:
            raise ValueError(f"decoder threads must be >= 1, not {threads}")
        self.blobs = blobs
        self.settings = settings
        self.limits = ImageLimits.from_settings(settings)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")

    async def decode(self, pin: PinCreated) -> Image.Image:
        """The pin's upright RGB image; raises ProcessingError with the reason otherwise."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._load, pin)

    def _load(self, pin: PinCreated) -> Image.Image:
        started = time.perf_counter()
        try:
            image = decode_image(load_image_bytes(pin, self.blobs, self.settings), self.limits)
        except ProcessingError as exc:
            embed_metrics.FAILURES.labels(exc.reason or "unknown").inc()
            raise
        embed_metrics.STAGE_SECONDS.labels("decode").observe(time.perf_counter() - started)
        return image

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def embed_pin(pin: PinCreated, batcher: MicroBatcher[PinCreated | Image.Image, Any],
                    decoder: ImageDecoder | None) -> Any:
    """One pin's vector: decoded ahead by `decoder` when given, else inside the batch thread."""
    if decoder is None:
        return await batcher.submit(pin)
    return await batcher.submit(await decoder.decode(pin))


class PinEmbedStage:
    """Runs one batch of pins.created records through embedding, storage and publication."""

    def __init__(self, *, embedder: EmbedderLike, batcher: MicroBatcher[PinCreated | Image.Image, Any],
                 store: PinStoreLike, outbox: Outbox, codec: AvroCodec,
                 decoder: ImageDecoder | None = None) -> None:
        self.embedder = embedder
        self.batcher = batcher
        self.store = store
        self.outbox = outbox
        self.codec = codec
        self.decoder = decoder

    async def process(self, records: Sequence[RawRecord]) -> BatchReport:
        report = BatchReport(received=len(records))
        pins: list[tuple[RawRecord, PinCreated]] = []
        for record in records:
            try:
                event = self.codec.decode_event(record.value or b"")
            except ContractError as exc:
                self._dead_letter(record, exc.reason, str(exc), report)
                continue
            if not isinstance(event, PinCreated):
                self._dead_letter(record, "wrong_schema", f"{event.schema_name} on a PinCreated topic",
                                  report)
                continue
            pins.append((record, event))
        outcomes = await asyncio.gather(*(embed_pin(pin, self.batcher, self.decoder)
                                          for _, pin in pins), return_exceptions=True)
        embeddings: list[tuple[RawRecord, PinEmbedding]] = []
        pending: list[tuple[str, str]] = []
        for (record, pin), outcome in zip(pins, outcomes, strict=True):
            if isinstance(outcome, np.ndarray):
                embeddings.append((record, self._embedding(pin, outcome)))
                continue
            reason = outcome.reason if isinstance(outcome, ProcessingError) else "model_error"
            pending.append((pin.pin_id, reason))
            if reason in PERMANENT_REASONS:
                self._dead_letter(record, reason, str(outcome), report)
            else:
                self.outbox.reconcile(Stage.EMBED, pin, "model", _as_error(outcome), record)
                report.reconciliations += 1
                report.count(reason)
        await self._store([p for _, p in pins], [e for _, e in embeddings], pending, pins, report)
        for record, embedding in embeddings:
            self.outbox.embedding(embedding, record)
        report.embedded = len(embeddings)
        await self.outbox.settle()
        return report

    def _embedding(self, pin: PinCreated, vector: np.ndarray[Any, np.dtype[np.float32]]) -> PinEmbedding:
        return PinEmbedding(pin_id=pin.pin_id, source_event_id=pin.event_id,
                            model_id=self.embedder.model_id, model_version=self.embedder.model_version,
                            vector=tuple(float(x) for x in vector))

    async def _store(self, pins: list[PinCreated], embeddings: list[PinEmbedding],
                     pending: list[tuple[str, str]], sources: list[tuple[RawRecord, PinCreated]],
                     report: BatchReport) -> None:
        if not pins:
            return
        started = time.perf_counter()

        times = {pin.pin_id: pin.event_time for pin in pins}

        def write() -> None:
            self.store.write_pins(pins)
            if embeddings:
                self.store.write_embeddings(embeddings)
            for pin_id, reason in pending:
                # Stamped with the pin's event time: a redelivered failure must not hide a later
                # successful embedding of the same pin.
                self.store.mark_pending_embedding(pin_id, reason, at=times[pin_id])

        try:
            await asyncio.to_thread(write)
        except SinkError as exc:
            # The store is down: each pin is re-driven later from its original record.
            for record, pin in sources:
                self.outbox.reconcile(Stage.PIN_STORE, pin, exc.dependency, exc, record)
            report.reconciliations += len(sources)
            report.count("store_unavailable")
            return
        embed_metrics.STAGE_SECONDS.labels("hbase_write").observe(time.perf_counter() - started)
        report.stored = len(pins)

    def _dead_letter(self, record: RawRecord, reason: str, error: str, report: BatchReport) -> None:
        self.outbox.dead_letter(record, reason, error)
        report.dead_lettered += 1
        report.count(reason)


def _as_error(outcome: object) -> Exception:
    if isinstance(outcome, Exception):
        return outcome
    return PinstreamError(f"unexpected outcome {outcome!r}")
