"""The pin-creation stage with fakes of our own interfaces: every pin ends embedded and stored,
dead-lettered with a reason, or queued for reconciliation; nothing is dropped."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from processors.batching import MicroBatcher
from processors.embed import ImageDecoder, PinEmbedStage, make_batch_function
from streams.blobs import BlobStore
from streams.codec import AvroCodec
from streams.deadletter import RawRecord
from streams.errors import SinkError
from streams.events import PinCreated, PinEmbedding, Stage
from streams.settings import load_settings


class FakeEmbedder:
    model_id = "fake"
    model_version = "fake-1"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray[Any, np.dtype[np.float32]]:
        if self.fail:
            raise RuntimeError("CUDA out of cheese")
        rows = [np.asarray(image.resize((4, 4)), dtype=np.float32).ravel() + 1 for image in images]
        out = np.stack(rows)
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


class FakeStore:
    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.pins: dict[str, PinCreated] = {}
        self.embeddings: dict[str, PinEmbedding] = {}
        self.pending: dict[str, str] = {}

    def _check(self) -> None:
        if self.down:
            raise SinkError("thrift: connection refused", dependency="hbase", retry_after=1.0)

    def write_pins(self, pins: Sequence[PinCreated]) -> None:
        self._check()
        self.pins.update({p.pin_id: p for p in pins})

    def write_embeddings(self, embeddings: Sequence[PinEmbedding]) -> None:
        self._check()
        self.embeddings.update({e.pin_id: e for e in embeddings})

    def mark_pending_embedding(self, pin_id: str, reason: str, *, at: object = None) -> None:
        self._check()
        self.pending[pin_id] = reason


class FakeOutbox:
    def __init__(self) -> None:
        self.embeddings: list[PinEmbedding] = []
        self.dead: list[tuple[str, str]] = []
        self.reconciliations: list[tuple[Stage, str, str]] = []
        self.settled = 0

    def embedding(self, event: PinEmbedding, source: RawRecord) -> None:
        self.embeddings.append(event)

    def dead_letter(self, record: RawRecord, reason: str, error: str) -> None:
        self.dead.append((record.source, reason))

    def reconcile(self, stage: Stage, pin: PinCreated, dependency: str, error: Exception,
                  source: RawRecord) -> None:
        self.reconciliations.append((stage, pin.pin_id, dependency))

    async def settle(self) -> None:
        self.settled += 1


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, "JPEG")
    return out.getvalue()


def _record(codec: AvroCodec, offset: int, pin: PinCreated | None = None,
            raw: bytes | None = None) -> RawRecord:
    value = raw if raw is not None else codec.encode_event(pin)  # type: ignore[arg-type]
    return RawRecord("pins.created.v1", 0, offset, b"k", value, (), 0)


def _pin(pin_id: str, **image: Any) -> PinCreated:
    return PinCreated(pin_id=pin_id, user_id="u1", board_id="b1", title="t", description="d", **image)


def _run(tmp_path: Path, records_of: Any, *, embedder: FakeEmbedder | None = None,
         store: FakeStore | None = None, decode_threads: int = 0) -> tuple[Any, FakeStore, FakeOutbox]:
    settings = load_settings(blob_dir=tmp_path, metrics_port=0)
    blobs = BlobStore(tmp_path)
    codec = AvroCodec()
    embedder = embedder or FakeEmbedder()
    store = store or FakeStore()
    outbox = FakeOutbox()

    async def main() -> Any:
        batcher: MicroBatcher[PinCreated | Image.Image, Any] = MicroBatcher(
            make_batch_function(embedder, blobs, settings), max_batch=4, max_wait_ms=5)
        async with batcher:
            decoder = ImageDecoder(blobs, settings, threads=decode_threads) if decode_threads else None
            stage = PinEmbedStage(embedder=embedder, batcher=batcher, store=store, outbox=outbox,
                                  codec=codec, decoder=decoder)
            try:
                return await stage.process(records_of(codec, blobs))
            finally:
                if decoder is not None:
                    decoder.close()

    return asyncio.run(main()), store, outbox


# 0: images decoded in the batch thread; 2: decoded ahead by the stage's decoder threads.
DECODING = pytest.mark.parametrize("decode_threads", [0, 2])


@DECODING
def test_good_pins_are_embedded_stored_and_published(tmp_path: Path, decode_threads: int) -> None:
    def records(codec: AvroCodec, blobs: BlobStore) -> list[RawRecord]:
        ref = blobs.put(_jpeg((200, 10, 10)))
        return [_record(codec, 0, _pin("p1", image_ref=ref)),
                _record(codec, 1, _pin("p2", image_bytes=_jpeg((10, 200, 10))))]

    report, store, outbox = _run(tmp_path, records, decode_threads=decode_threads)
    assert (report.received, report.embedded, report.stored) == (2, 2, 2)
    assert set(store.pins) == {"p1", "p2"} and set(store.embeddings) == {"p1", "p2"}
    assert [e.pin_id for e in outbox.embeddings] == ["p1", "p2"]
    vector = np.array(outbox.embeddings[0].vector)
    assert vector.shape == (48,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    assert outbox.embeddings[0].model_version == "fake-1" and outbox.settled == 1


@DECODING
def test_bad_images_are_dead_lettered_with_reason_and_stored_without_features(
        tmp_path: Path, decode_threads: int) -> None:
    def records(codec: AvroCodec, blobs: BlobStore) -> list[RawRecord]:
        return [_record(codec, 0, _pin("p1", image_bytes=b"\xff\xd8\xff garbage")),
                _record(codec, 1, _pin("p2", image_ref="0" * 64 + ".jpg")),
                _record(codec, 2, _pin("p3", image_bytes=b"just some text, not an image")),
                _record(codec, 3, _pin("p4", image_bytes=_jpeg((1, 2, 3))))]

    report, store, outbox = _run(tmp_path, records, decode_threads=decode_threads)
    reasons = dict(outbox.dead)
    assert reasons["pins.created.v1/0/1"] == "unknown_blob"
    assert {reasons["pins.created.v1/0/0"], reasons["pins.created.v1/0/2"]} <= {
        "corrupt_image", "not_an_image"}
    assert set(store.pins) == {"p1", "p2", "p3", "p4"}  # metadata is kept for every pin
    assert set(store.pending) == {"p1", "p2", "p3"} and set(store.embeddings) == {"p4"}
    assert report.dead_lettered == 3 and not outbox.reconciliations


def test_model_failure_stores_pin_without_features_and_asks_for_reembedding(tmp_path: Path) -> None:
    def records(codec: AvroCodec, blobs: BlobStore) -> list[RawRecord]:
        return [_record(codec, 0, _pin("p1", image_bytes=_jpeg((9, 9, 9))))]

    report, store, outbox = _run(tmp_path, records, embedder=FakeEmbedder(fail=True))
    assert outbox.reconciliations == [(Stage.EMBED, "p1", "model")]
    assert store.pending == {"p1": "model_error"} and "p1" in store.pins
    assert not outbox.embeddings and report.reasons == {"model_error": 1}


def test_store_outage_becomes_reconciliations_and_embeddings_still_flow(tmp_path: Path) -> None:
    def records(codec: AvroCodec, blobs: BlobStore) -> list[RawRecord]:
        return [_record(codec, i, _pin(f"p{i}", image_bytes=_jpeg((i, i, i)))) for i in range(3)]

    report, _, outbox = _run(tmp_path, records, store=FakeStore(down=True))
    assert outbox.reconciliations == [(Stage.PIN_STORE, f"p{i}", "hbase") for i in range(3)]
    assert len(outbox.embeddings) == 3 and report.stored == 0


@pytest.mark.parametrize(("raw", "reason"), [(b"\x01junk", "bad_magic"), (b"", "empty")])
def test_undecodable_records_are_dead_lettered(tmp_path: Path, raw: bytes, reason: str) -> None:
    _, store, outbox = _run(tmp_path, lambda codec, blobs: [_record(codec, 5, raw=raw)])
    assert outbox.dead == [("pins.created.v1/0/5", reason)] and not store.pins
