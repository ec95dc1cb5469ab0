"""The pin-creation path end to end on the real stack and the real model: a `pinstream worker`
process embeds published pins, stores them in HBase, indexes them and answers visual search;
bad images are dead-lettered with reasons, an HBase outage becomes reconciliation records."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from sinks.hbase import PinStore
from streams import stack
from streams.blobs import BlobStore
from streams.codec import AvroCodec
from streams.consumer import EventConsumer
from streams.dlq import DeadLetter
from streams.events import PinCreated, PinEmbedding, Reconciliation, Stage
from streams.localworker import LocalWorker
from streams.producer import EventProducer, PinProducer
from streams.ratelimit import RateLimiter
from streams.settings import Settings
from streams.topics import (
    PINS_CREATED,
    PINS_EMBEDDINGS,
    RECONCILIATION,
)
from streams.workload.images import augment, render_pin_image
from streams.workload.population import build_world
from tests.unit.test_images import png_with_size

pytestmark = pytest.mark.integration
LetterWait = Callable[[Settings, int, float], dict[str, DeadLetter]]  # the dead_letters fixture


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWorker]:
    running = LocalWorker(tmp_path_factory.mktemp("worker"), embed_threads=2)
    with running:
        yield running


def _images(n: int, seed: int = 3) -> list[bytes]:
    world = build_world(seed, users=4, pins=n, clusters=n)
    rng = np.random.default_rng(seed)
    return [render_pin_image(rng, world.clusters[i % len(world.clusters)].theme) for i in range(n)]


def _publish_pins(settings: Settings, images: list[bytes], prefix: str) -> list[PinCreated]:
    blobs = BlobStore(settings.blob_dir)
    with PinProducer(settings, rate_limiter=RateLimiter(0)) as producer:
        return [producer.create_pin(pin_id=f"{prefix}{i}", user_id=f"u{i % 3}", board_id="b1",
                                    title=f"pin {i}", description="generated",
                                    image_ref=blobs.put(image))
                for i, image in enumerate(images)]


def _read(settings: Settings, topic: str, n: int, timeout: float = 120.0) -> list[object]:
    consumer = EventConsumer(settings, [settings.topic(topic)], group_id=f"g-{uuid.uuid4()}",
                             on_decode_error=lambda raw, exc: None)
    out = [r.value for r in consumer.iter(max_records=n, idle_timeout=timeout)]
    consumer.close()
    return out


def test_published_pins_are_embedded_stored_and_found_by_an_augmented_copy(worker: LocalWorker) -> None:
    settings = worker.settings
    images = _images(8)
    pins = _publish_pins(settings, images, "p")
    embeddings = [e for e in _read(settings, PINS_EMBEDDINGS.name, len(pins)) if isinstance(e, PinEmbedding)]
    assert sorted(e.pin_id for e in embeddings) == sorted(p.pin_id for p in pins)
    for e in embeddings:
        assert e.model_id == "efficientnet-lite0" and len(e.vector) == 1280
        assert abs(float(np.linalg.norm(e.vector)) - 1.0) < 1e-4

    store = PinStore.from_settings(settings, create_tables=False)
    rows = store.get_pins([p.pin_id for p in pins])
    text_hits = store.match_text("generated pin", 50)  # the text fallback of visual search
    store.close()
    assert set(rows) == {p.pin_id for p in pins}
    assert {p.pin_id for p in pins} <= set(text_hits)
    assert rows["p3"].title == "pin 3" and rows["p3"].embedding is not None
    assert rows["p3"].embedding.shape == (1280,)

    deadline = time.monotonic() + 60
    while worker.health()["index_pins"] != len(pins):
        assert time.monotonic() < deadline, worker.health()
        time.sleep(0.5)
    copy = augment(Image.open(io.BytesIO(images[5])), np.random.default_rng(11))
    buffer = io.BytesIO()
    copy.save(buffer, "JPEG", quality=80)
    answer = httpx.post(f"{worker.url}/search/visual", params={"k": 5}, content=buffer.getvalue(),
                        headers={"Content-Type": "image/jpeg"}, timeout=30).json()
    assert answer["fallback"] is None
    assert answer["hits"][0]["pin_id"] == "p5", answer["hits"]
    assert answer["hits"][0]["title"] == "pin 5"

    # The CLI asks the same worker.
    query = Path(worker.settings.blob_dir) / "query.jpg"
    query.write_bytes(buffer.getvalue())
    cli = subprocess.run([sys.executable, "-m", "streams.cli", "search", str(query), "-k", "3"],
                         capture_output=True, text=True, env=worker.env, check=False, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert "p5" in cli.stdout.splitlines()[3]  # the first row of the table


def test_bad_images_are_dead_lettered_with_reasons_and_the_worker_goes_on(
        worker: LocalWorker, dead_letters: LetterWait) -> None:
    settings = worker.settings
    codec = AvroCodec()
    bad = {
        "corrupt": b"\xff\xd8\xff\xe0" + os.urandom(300),
        "zero": b"",
        "text": b"<html>not an image</html>",
        "bomb": png_with_size(30000, 30000),
    }
    raw = EventProducer(settings)
    topic = settings.topic(PINS_CREATED.name)
    for name, data in bad.items():
        event = PinCreated(pin_id=f"bad-{name}", user_id="u", board_id="b", title=name,
                           description="", image_bytes=data)
        raw.send_raw(topic, event.pin_id.encode(), codec.encode_event(event))
    unknown = PinCreated(pin_id="bad-ref", user_id="u", board_id="b", title="ref", description="",
                         image_ref="f" * 64 + ".jpg")
    raw.send_raw(topic, b"bad-ref", codec.encode_event(unknown))
    raw.send_raw(topic, b"bad-bytes", b"\x00\x01garbage")
    raw.close()
    (good,) = _publish_pins(settings, _images(1, seed=9), "after-bad-")

    reasons = {key: letter.reason for key, letter in dead_letters(settings, 6, 120).items()}
    assert reasons["bad-corrupt"] in ("corrupt_image", "not_an_image")
    assert reasons["bad-zero"] == "empty_image"
    assert reasons["bad-text"] == "not_an_image"
    assert reasons["bad-bomb"] == "too_many_pixels"
    assert reasons["bad-ref"] == "unknown_blob"
    assert reasons["bad-bytes"] in ("bad_magic", "unknown_schema_id", "registry_not_configured")
    embedded = [e for e in _read(settings, PINS_EMBEDDINGS.name, 20, timeout=15)
                if isinstance(e, PinEmbedding)]
    assert good.pin_id in {e.pin_id for e in embedded}
    store = PinStore.from_settings(settings, create_tables=False)
    rows = store.get_pins(["bad-bomb", "bad-ref"])
    store.close()
    assert rows["bad-bomb"].pending_embedding == "too_many_pixels"  # metadata kept, no features
    assert rows["bad-ref"].embedding is None


def test_hbase_outage_becomes_reconciliations_without_a_crash(worker: LocalWorker) -> None:
    settings = worker.settings
    stack.down(["thrift"])
    try:
        pins = _publish_pins(settings, _images(3, seed=21), "outage-")
        records = [r for r in _read(settings, RECONCILIATION.name, 3, timeout=120)
                   if isinstance(r, Reconciliation)]
    finally:
        stack.up(["thrift"])
    assert {r.entity_id for r in records} == {p.pin_id for p in pins}
    assert {(r.stage, r.dependency) for r in records} == {(Stage.PIN_STORE, "hbase")}
    assert all(r.payload and r.source_topic == settings.topic(PINS_CREATED.name) for r in records)
    assert worker.process is not None and worker.process.poll() is None
    # Embeddings still flowed during the outage, and the worker serves after it.
    embedded = {e.pin_id for e in _read(settings, PINS_EMBEDDINGS.name, 30, timeout=15)
                if isinstance(e, PinEmbedding)}
    assert {p.pin_id for p in pins} <= embedded
    assert worker.health()["index_ready"] is True


def test_restarted_worker_loads_its_snapshot_and_catches_up(worker: LocalWorker) -> None:
    before = worker.health()["index_pins"]
    assert isinstance(before, int) and before > 0
    worker.stop()
    snapshots = list(Path(worker.settings.index_dir).rglob("*"))
    assert snapshots, "no snapshot written on shutdown"
    worker.start()
    assert worker.health()["index_pins"] == before


def test_search_endpoint_validates_type_size_and_parameters(worker: LocalWorker) -> None:
    url = f"{worker.url}/search/visual"
    cap = worker.settings.search_max_upload_bytes
    cases = [
        ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"content": b"x" * (cap + 1), "headers": {"Content-Type": "image/jpeg"}}, 413, "upload_too_large"),
        ({"content": b"", "headers": {"Content-Type": "image/jpeg"}}, 400, "empty_image"),
        ({"content": b"not an image at all", "headers": {"Content-Type": "image/png"}}, 422, "not_an_image"),
        ({"content": png_with_size(30000, 30000), "headers": {"Content-Type": "image/png"}}, 422,
         "too_many_pixels"),
        ({"files": {"other": ("a.jpg", b"x", "image/jpeg")}}, 400, "missing_image"),
    ]
    for kwargs, status, reason in cases:
        answer = httpx.post(url, timeout=30, **kwargs)  # type: ignore[arg-type]
        assert (answer.status_code, answer.json()["error"]) == (status, reason), kwargs.get("headers")
    bad_k = httpx.post(url, params={"k": 0}, content=_images(1)[0],
                       headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert bad_k.status_code == 400 and bad_k.json()["error"] == "bad_parameter"
    image = _images(1, seed=5)[0]
    multipart = httpx.post(url, files={"image": ("q.jpg", image, "image/jpeg")}, timeout=30)
    assert multipart.status_code == 200 and multipart.json()["fallback"] is None
    assert worker.alive()
