"""`pinstream bench pins`: publish -> searchable latency at a sustained pin rate through a real
worker, then end-to-end visual search latency (upload, decode, embed, ANN, metadata) against it."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from confluent_kafka import TopicPartition
from PIL import Image

from streams.bench.report import machine_info, percentile
from streams.blobs import BlobStore
from streams.consumer import raw_record
from streams.localworker import LocalWorker
from streams.offsets import partitions_of, plain_consumer
from streams.producer import PinProducer
from streams.ratelimit import RateLimiter
from streams.topics import PINS_EMBEDDINGS
from streams.workload.images import augment, render_pin_image
from streams.workload.population import build_world

GOAL_P99_S = 2.0
SEARCH_GOAL_P95_S = 0.3


@dataclass
class PinsResult:
    rate: float
    duration_s: float
    published: int = 0
    searchable: int = 0
    achieved_rate: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    search_latencies_s: list[float] = field(default_factory=list)
    search_hit_at_1: int = 0
    worker_index_pins: int = 0

    def summary(self, values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        return {"p50": percentile(values, 50), "p95": percentile(values, 95),
                "p99": percentile(values, 99), "max": max(values), "count": float(len(values))}

    def to_json(self, command: str) -> dict[str, Any]:
        return {
            "bench": "pins", "command": command, "rate": self.rate, "duration_s": self.duration_s,
            "published": self.published, "searchable": self.searchable,
            "achieved_rate": self.achieved_rate, "goal_p99_s": GOAL_P99_S,
            "publish_to_searchable_s": self.summary(self.latencies_s),
            "visual_search_s": self.summary(self.search_latencies_s),
            "search_goal_p95_s": SEARCH_GOAL_P95_S,
            "search_hit_at_1": self.search_hit_at_1, "worker_index_pins": self.worker_index_pins,
            "machine": machine_info(["torch", "faiss-cpu", "confluent-kafka", "faust-streaming"]),
        }


class _Arrivals:
    """Follows the embeddings topic in a thread: pin id -> wall-clock arrival time."""

    def __init__(self, worker: LocalWorker) -> None:
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        settings = worker.settings
        topic = settings.topic(PINS_EMBEDDINGS.name)
        self._consumer = plain_consumer(settings, "bench-pins")
        self._consumer.assign([TopicPartition(topic, p, 0)
                               for p in partitions_of(self._consumer, topic)])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(200, 0.1):
                if msg.error() is None:
                    record = raw_record(msg)
                    if record.key is not None:
                        self.seen.setdefault(record.key.decode(), time.time())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def _render(count: int, seed: int, blobs: BlobStore) -> list[tuple[str, bytes]]:
    world = build_world(seed, users=max(count // 10, 1), pins=count, clusters=16)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        image = render_pin_image(rng, world.clusters[i % len(world.clusters)].theme)
        out.append((blobs.put(image), image))
    return out


def run_pins_bench(workdir: Path, *, rate: float, duration_s: float, searches: int, seed: int,
                   progress: Callable[[str], None]) -> PinsResult:
    result = PinsResult(rate, duration_s)
    count = max(1, int(rate * duration_s))
    worker = LocalWorker(workdir)
    try:
        progress(f"rendering {count} pin images")
        images = _render(count, seed, BlobStore(worker.settings.blob_dir))
        progress("starting the worker (model load, index catch-up)")
        worker.start()
        arrivals = _Arrivals(worker)
        sent: dict[str, float] = {}
        producer = PinProducer(worker.settings, rate_limiter=RateLimiter(0))
        progress(f"publishing {count} pins at {rate:g}/s")
        started = time.monotonic()
        for i, (ref, _) in enumerate(images):
            # Open loop: pin i is due at start + i/rate whatever the worker does.
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pin_id = f"bench{i:06d}"
            sent[pin_id] = time.time()
            producer.create_pin(pin_id=pin_id, user_id=f"u{i % 97}", board_id=f"b{i % 31}",
                                title=f"bench pin {i}", image_ref=ref)
        producer.close()
        result.published = len(sent)
        result.achieved_rate = len(sent) / max(time.monotonic() - started, 1e-9)
        progress("waiting for the last embeddings")
        deadline = time.monotonic() + max(60.0, duration_s)
        while len(arrivals.seen.keys() & sent.keys()) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.2)
        arrivals.close()
        result.latencies_s = [arrivals.seen[p] - t for p, t in sent.items() if p in arrivals.seen]
        result.searchable = len(result.latencies_s)
        time.sleep(1.0)  # the worker's follower applies what we saw within milliseconds
        result.worker_index_pins = int(worker.health()["index_pins"])
        progress(f"{searches} visual searches of augmented copies")
        _search(worker, images, searches, seed, result)
    finally:
        worker.stop()
        worker.cleanup()
    return result


def _search(worker: LocalWorker, images: list[tuple[str, bytes]], searches: int, seed: int,
            result: PinsResult) -> None:
    rng = np.random.default_rng(seed + 1)
    with httpx.Client(timeout=30) as client:
        for n in range(searches):
            index = int(rng.integers(len(images)))
            copy = augment(Image.open(io.BytesIO(images[index][1])), rng)
            buffer = io.BytesIO()
            copy.save(buffer, "JPEG", quality=85)
            started = time.perf_counter()
            answer = client.post(f"{worker.url}/search/visual", params={"k": 10},
                                 content=buffer.getvalue(), headers={"Content-Type": "image/jpeg"})
            elapsed = time.perf_counter() - started
            if n == 0:
                continue  # the first query warms the HTTP connection
            result.search_latencies_s.append(elapsed)
            hits = answer.json().get("hits", []) if answer.status_code == 200 else []
            if hits and hits[0]["pin_id"] == f"bench{index:06d}":
                result.search_hit_at_1 += 1
