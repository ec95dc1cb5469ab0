"""Start the ANN index: load its snapshot, then catch up from the compacted embeddings topic; rebuild
from the topic when the snapshot is missing, corrupt, mismatched or outgrown.

Reads are assign()-based from explicit offsets up to the end offsets taken at start (a live topic
cannot make a catch-up endless) and never commit to a group: the snapshot holds the offsets.
`apply_record` applies one record as it arrives, for the worker that keeps the index live.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
from confluent_kafka import Consumer, TopicPartition

from sinks.faiss import IndexKind, VectorIndex, VectorRejectedError
from sinks.faiss_snapshot import SnapshotError
from streams.codec import AvroCodec
from streams.consumer import raw_record
from streams.deadletter import RawRecord
from streams.errors import ContractError, ProcessingError
from streams.events import PinEmbedding, Stage
from streams.kafka_errors import usable
from streams.offsets import partitions_of, plain_consumer, watermarks
from streams.registry import build_codec
from streams.settings import Settings
from streams.topics import PINS_EMBEDDINGS

log = logging.getLogger(__name__)

EMBEDDING_DIM = 1280
BATCH_SIZE = 1_000  # records applied per index call: batching lets faiss use BLAS
_PROGRESS_EVERY_S = 0.5
_STALL_LIMIT_S = 30.0
_STAGE = str(Stage.INDEX)


class Applied(StrEnum):
    UPSERTED = "upserted"
    DELETED = "deleted"
    SKIPPED_OTHER_VERSION = "skipped_other_version"


@dataclass(frozen=True, slots=True)
class CatchupProgress:
    read: int  # records read so far
    total: int  # offsets to read (an upper bound: compaction leaves gaps)


ProgressCallback = Callable[[CatchupProgress], None]


@dataclass
class CatchupReport:
    """How the index was opened and what the catch-up read."""

    source: str = "snapshot"  # "snapshot" | "rebuilt"
    snapshot_problem: str | None = None  # "missing", "corrupt: checksum", "mismatched: model version"
    start_offsets: dict[int, int] = field(default_factory=dict)
    end_offsets: dict[int, int] = field(default_factory=dict)
    read: int = 0
    upserted: int = 0
    deleted: int = 0
    skipped_other_version: int = 0
    rejected: int = 0  # undecodable records and refused vectors (logged, not dead-lettered again)
    seconds: float = 0.0
    saved_to: Path | None = None


@dataclass(frozen=True, slots=True)
class OpenedIndex:
    index: VectorIndex
    offsets: dict[int, int]  # partition -> next offset to read from the embeddings topic
    report: CatchupReport


def snapshot_dir(settings: Settings, model_version: str) -> Path:
    """Where the snapshot of one model version lives: `<index_dir>/<model version>`."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_version) or "_"
    return settings.index_dir / safe


def open_index(settings: Settings, model_version: str, *, dim: int = EMBEDDING_DIM,
               progress: ProgressCallback | None = None, save: bool = True,
               codec: AvroCodec | None = None) -> OpenedIndex:
    """Load the snapshot of `model_version` (or start empty) and catch up to the topic's end.

    When anything was read or the snapshot was unusable, a fresh snapshot is saved (`save`).
    """
    started = time.monotonic()
    topic = settings.topic(PINS_EMBEDDINGS.name)
    directory = snapshot_dir(settings, model_version)
    report = CatchupReport()
    index = _load_snapshot(settings, directory, model_version, dim, topic, report)
    consumer = plain_consumer(settings, "index-catchup")
    try:
        marks = {p: watermarks(consumer, topic, p) for p in partitions_of(consumer, topic)}
        if index is not None and any(o > marks[p].high for p, o in index.offsets().items()
                                     if p in marks):
            # the topic was recreated or truncated: its offsets no longer mean what they did
            _rebuilding(report, "mismatched: offsets beyond the topic's end", directory)
            index = None
        covered = index.offsets() if index is not None else {}
        report.start_offsets = {p: min(max(covered.get(p, m.low), m.low), m.high)
                                for p, m in marks.items()}
        report.end_offsets = {p: m.high for p, m in marks.items()}
        if index is None:
            index = VectorIndex(model_version, dim, kind=IndexKind(settings.index_kind),
                                flat_max=settings.index_flat_max, nprobe=settings.index_nprobe,
                                expected_size=sum(m.high - m.low for m in marks.values()), topic=topic)
        index.advance(report.start_offsets)
        _catch_up(consumer, topic, index, report, codec or build_codec(settings), progress)
    finally:
        consumer.close()
    index.advance(report.end_offsets)
    if save and (report.read or report.source == "rebuilt"):
        report.saved_to = directory
        index.save(directory)
        if report.source == "rebuilt" and index.kind == IndexKind.IVF_SQ8:
            count = len(index)
            del index  # holding both would double the peak memory
            index = _reloaded(settings, directory, model_version, dim, topic, count)
    report.seconds = time.monotonic() - started
    log.info("index %s: %s, %d records read (%d upserted, %d deleted, %d other model version, "
             "%d rejected) in %.1fs; %d pins", model_version, report.source, report.read,
             report.upserted, report.deleted, report.skipped_other_version, report.rejected,
             report.seconds, len(index))
    return OpenedIndex(index, index.offsets(), report)


def apply_record(index: VectorIndex, record: RawRecord, codec: AvroCodec, *,
                 model_id: str | None = None) -> Applied:
    """Apply one embeddings-topic record: a value upserts, a tombstone deletes.

    Another version of our model is skipped (its own index serves it: versions coexist during a
    migration); an embedding of another model (`model_id` given and different) is refused.
    Raises ProcessingError (stage INDEX, with a reason) for a record that cannot be applied, so the
    caller can dead-letter it.
    """
    pin_id, event = _decode(record, codec)
    position = {record.partition: record.offset + 1}
    if event is None:
        index.delete(pin_id, offsets=position)
        return Applied.DELETED
    if model_id is not None and event.model_id != model_id:
        index.advance(position)
        raise ProcessingError(
            f"{record.source}: embedding of model {event.model_id!r} {event.model_version!r}; "
            f"this index serves {model_id!r} {index.model_version!r}",
            stage=_STAGE, reason="unsupported_model")
    if event.model_version != index.model_version:
        index.advance(position)
        return Applied.SKIPPED_OTHER_VERSION
    try:
        index.upsert(pin_id, event.vector, model_version=event.model_version, offsets=position)
    except VectorRejectedError as exc:
        raise ProcessingError(f"{record.source}: {exc}", stage=_STAGE, reason=exc.reason) from exc
    return Applied.UPSERTED


# --- internals --------------------------------------------------------------------------------


def _load_snapshot(settings: Settings, directory: Path, model_version: str, dim: int, topic: str,
                   report: CatchupReport) -> VectorIndex | None:
    try:
        index = VectorIndex.load(directory, model_version, expected_dim=dim, expected_topic=topic,
                                 kind=IndexKind(settings.index_kind),
                                 flat_max=settings.index_flat_max, nprobe=settings.index_nprobe)
    except SnapshotError as exc:
        _rebuilding(report, exc.summary, directory)
        return None
    if index.needs_retrain:
        _rebuilding(report, f"outgrown: {len(index)} pins, lists trained for {index.trained_for}",
                    directory)
        return None
    log.info("loaded the index snapshot at %s: %d pins", directory, len(index))
    return index


def _reloaded(settings: Settings, directory: Path, model_version: str, dim: int, topic: str,
              count: int) -> VectorIndex:
    """The snapshot just written, loaded back to compact a rebuilt index: inverted lists grown by
    appends keep up to half their capacity unused (about 0.4 KB per 1280-d vector at 1M pins);
    read from a file they are exactly sized."""
    loaded = VectorIndex.load(directory, model_version, expected_dim=dim, expected_topic=topic,
                              kind=IndexKind(settings.index_kind), flat_max=settings.index_flat_max,
                              nprobe=settings.index_nprobe)
    if len(loaded) != count:
        raise ProcessingError(f"the snapshot at {directory} holds {len(loaded)} pins, the index had "
                              f"{count}", stage=_STAGE, reason="snapshot_mismatch")
    return loaded


def _rebuilding(report: CatchupReport, problem: str, directory: Path) -> None:
    report.source = "rebuilt"
    report.snapshot_problem = problem
    log.warning("index snapshot at %s not used (%s): rebuilding from the embeddings topic",
                directory, problem)


def _decode(record: RawRecord, codec: AvroCodec) -> tuple[str, PinEmbedding | None]:
    if record.value is None:
        if not record.key:
            raise ProcessingError(f"{record.source}: tombstone without a key", stage=_STAGE,
                                  reason="null_key")
        return record.key.decode("utf-8", errors="replace"), None
    try:
        event = codec.decode_event(record.value)
    except ContractError as exc:
        raise ProcessingError(f"{record.source}: {exc}", stage=_STAGE, reason=exc.reason) from exc
    if not isinstance(event, PinEmbedding):
        raise ProcessingError(f"{record.source}: {type(event).__name__} on the embeddings topic",
                              stage=_STAGE, reason="wrong_contract")
    return event.pin_id, event


class _Batch:
    """Pending writes, last one per pin wins; applied with the offsets they cover."""

    def __init__(self, index: VectorIndex, report: CatchupReport) -> None:
        self.index = index
        self.report = report
        self.pending: dict[str, npt.NDArray[np.float32] | None] = {}
        self.offsets: dict[int, int] = {}

    def add(self, record: RawRecord, codec: AvroCodec) -> None:
        self.report.read += 1
        self.offsets[record.partition] = record.offset + 1
        try:
            pin_id, event = _decode(record, codec)
            if event is None:
                self.pending[pin_id] = None
            elif event.model_version != self.index.model_version:
                self.report.skipped_other_version += 1
            else:
                self.pending[pin_id] = self.index.check(pin_id, event.vector,
                                                        model_version=event.model_version)[0]
        except (ProcessingError, VectorRejectedError) as exc:
            self.report.rejected += 1
            if self.report.rejected <= 10:
                log.warning("catch-up skipped %s: %s", record.source, exc)
        if len(self.pending) >= BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        deletes = [pin for pin, vector in self.pending.items() if vector is None]
        upserts = {pin: vector for pin, vector in self.pending.items() if vector is not None}
        if deletes:
            self.report.deleted += self.index.delete_many(deletes)
        if upserts:
            self.index.upsert_many(list(upserts), np.stack(list(upserts.values())))
            self.report.upserted += len(upserts)
        self.index.advance(self.offsets)
        self.pending.clear()


def _catch_up(consumer: Consumer, topic: str, index: VectorIndex, report: CatchupReport,
              codec: AvroCodec, progress: ProgressCallback | None) -> None:
    active = {p: end for p, end in report.end_offsets.items() if report.start_offsets[p] < end}
    total = sum(end - report.start_offsets[p] for p, end in active.items())
    if progress is not None:
        progress(CatchupProgress(0, total))
    if not active:
        return
    consumer.assign([TopicPartition(topic, p, report.start_offsets[p]) for p in active])
    batch = _Batch(index, report)
    last_report = last_read = time.monotonic()
    while active:
        msg = consumer.poll(0.5)
        now = time.monotonic()
        if msg is None or not usable(msg, consumer="index catch-up"):
            _retire_passed(consumer, topic, active)
            if now - last_read > _STALL_LIMIT_S and active:
                raise ProcessingError(f"index catch-up stalled: nothing read from {topic} for "
                                      f"{_STALL_LIMIT_S:.0f}s, partitions {sorted(active)} unfinished",
                                      stage=_STAGE, reason="stalled")
            continue
        last_read = now
        record = raw_record(msg)
        end = active.get(record.partition)
        if end is None or record.offset >= end:
            continue
        batch.add(record, codec)
        if record.offset + 1 >= end:
            _retire(consumer, topic, active, record.partition)
        if progress is not None and now - last_report >= _PROGRESS_EVERY_S:
            progress(CatchupProgress(report.read, total))
            last_report = now
    batch.flush()
    if progress is not None:
        progress(CatchupProgress(report.read, total))


def _retire_passed(consumer: Consumer, topic: str, active: dict[int, int]) -> None:
    """Retire partitions whose position passed the end (gaps left by compaction)."""
    for tp in consumer.position([TopicPartition(topic, p) for p in active]):
        if tp.offset >= 0 and tp.offset >= active[tp.partition]:
            _retire(consumer, topic, active, tp.partition)


def _retire(consumer: Consumer, topic: str, active: dict[int, int], partition: int) -> None:
    if active.pop(partition, None) is not None:
        consumer.incremental_unassign([TopicPartition(topic, partition)])
