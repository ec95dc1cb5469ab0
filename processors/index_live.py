"""Keeps a worker's ANN index current: after the catch-up of `index_catchup.open_index`, a thread
follows the compacted embeddings topic (every partition: each worker serves the whole index),
applies each record, snapshots periodically, and measures publish -> searchable latency."""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from processors.index_catchup import Applied, apply_record, open_index, snapshot_dir
from sinks.faiss import VectorIndex
from streams.codec import AvroCodec
from streams.consumer import raw_record
from streams.deadletter import DeadLetterWriter, RawRecord
from streams.errors import ProcessingError
from streams.metrics import REGISTRY
from streams.offsets import plain_consumer
from streams.producer import EventProducer
from streams.registry import build_codec
from streams.settings import Settings
from streams.topics import HEADER_SOURCE_TIMESTAMP, PINS_EMBEDDINGS

log = logging.getLogger(__name__)


PUBLISH_TO_SEARCHABLE = Histogram(
    "pinstream_publish_to_searchable_seconds",
    "From the pin's publication on pins.created to its vector being searchable in this worker.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0), registry=REGISTRY,
)
INDEX_SIZE = Gauge("pinstream_index_pins", "Pins in the worker's ANN index.", registry=REGISTRY)
INDEX_APPLIED = Counter("pinstream_index_records_total", "Embeddings-topic records applied, by outcome.",
                        ["outcome"], registry=REGISTRY)
INDEX_SECONDS = Histogram("pinstream_index_apply_seconds", "Seconds to apply one embeddings record.",
                          buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05), registry=REGISTRY)


def source_latency_s(record: RawRecord, now_ms: float) -> float | None:
    """Seconds since the original pin was published, from the header the embed stage sets."""
    header = record.headers and dict(record.headers).get(HEADER_SOURCE_TIMESTAMP)
    if not header:
        return None
    try:
        return max(0.0, (now_ms - int(header)) / 1000.0)
    except ValueError:
        return None


class IndexFollower:
    """Owns the worker's VectorIndex: opens it (snapshot + catch-up), then follows the topic."""

    def __init__(self, settings: Settings, model_version: str, dim: int, *,
                 snapshot_every_s: float = 60.0, codec: AvroCodec | None = None,
                 model_id: str | None = None) -> None:
        self.settings = settings
        self.model_version = model_version
        self.model_id = model_id  # when given, embeddings of other models are dead-lettered
        self.dim = dim
        self.snapshot_every_s = snapshot_every_s
        self.codec = codec or build_codec(settings)
        self.index: VectorIndex | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dlq_producer: EventProducer | None = None
        self.applied = 0
        self.rejected = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="index-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.index is not None and self.error is None:
            self.index.save(snapshot_dir(self.settings, self.model_version))
        if self._dlq_producer is not None:
            self._dlq_producer.close()

    def _run(self) -> None:
        try:
            opened = open_index(self.settings, self.model_version, dim=self.dim, codec=self.codec)
            self.index = opened.index
            INDEX_SIZE.set(len(opened.index))
            self.ready.set()
            self._follow(opened.index, opened.offsets)
        except BaseException as exc:  # surfaced by the worker's health view, never swallowed
            self.error = exc
            self.ready.set()
            log.exception("index follower stopped")

    def _follow(self, index: VectorIndex, offsets: dict[int, int]) -> None:
        topic = self.settings.topic(PINS_EMBEDDINGS.name)
        consumer = plain_consumer(self.settings, "index-follow")
        consumer.assign([TopicPartition(topic, p, o) for p, o in offsets.items()])
        last_snapshot = time.monotonic()
        dirty = False
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(500, 0.2):
                    if msg.error() is None:
                        self._apply(index, raw_record(msg))
                        dirty = True
                if dirty and time.monotonic() - last_snapshot > self.snapshot_every_s:
                    index.save(snapshot_dir(self.settings, self.model_version))
                    last_snapshot, dirty = time.monotonic(), False
        finally:
            consumer.close()

    def _apply(self, index: VectorIndex, record: RawRecord) -> None:
        started = time.perf_counter()
        try:
            outcome = apply_record(index, record, self.codec, model_id=self.model_id)
        except ProcessingError as exc:
            self.rejected += 1
            INDEX_APPLIED.labels(exc.reason or "rejected").inc()
            self._dead_letter(record, exc)
            return
        except Exception as exc:  # an undecodable record must not stop the follower
            self.rejected += 1
            INDEX_APPLIED.labels("undecodable").inc()
            self._dead_letter(record, ProcessingError(str(exc), stage="INDEX", reason="undecodable"))
            return
        self.applied += 1
        INDEX_APPLIED.labels(str(outcome)).inc()
        INDEX_SECONDS.observe(time.perf_counter() - started)
        INDEX_SIZE.set(len(index))
        if outcome is Applied.UPSERTED:
            latency = source_latency_s(record, time.time() * 1000)
            if latency is not None:
                PUBLISH_TO_SEARCHABLE.observe(latency)

    def _dead_letter(self, record: RawRecord, exc: ProcessingError) -> None:
        log.warning("embedding %s refused: %s", record.source, exc)
        if self._dlq_producer is None:
            self._dlq_producer = EventProducer(self.settings, codec=self.codec)
        DeadLetterWriter(self._dlq_producer).send(record, exc.reason or "rejected", str(exc))
