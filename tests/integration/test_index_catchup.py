"""The ANN index against the real Kafka: built by catch-up from the embeddings topic, snapshotted,
reopened from the snapshot catching up only what is new, rebuilt from the topic when the snapshot
is corrupt; records of another model version are skipped and counted."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from confluent_kafka import TopicPartition

from processors.index_catchup import (
    EMBEDDING_DIM,
    Applied,
    CatchupProgress,
    apply_record,
    open_index,
    snapshot_dir,
)
from sinks.faiss import IndexKind
from streams.consumer import raw_record
from streams.events import PinEmbedding
from streams.offsets import plain_consumer
from streams.producer import EventProducer
from streams.registry import build_codec
from streams.settings import Settings
from streams.topics import PINS_EMBEDDINGS
from tests.integration.kafka_fixtures import kafka_settings

pytestmark = pytest.mark.integration
__all__ = ["kafka_settings"]

MODEL = "lite0-2024.1"


def vector(seed: int) -> npt.NDArray[np.float32]:
    row = np.random.default_rng(seed).random(EMBEDDING_DIM, dtype=np.float32)
    return row / np.linalg.norm(row)


def embedding(pin_id: str, seed: int, model_version: str = MODEL) -> PinEmbedding:
    return PinEmbedding(pin_id=pin_id, source_event_id=uuid.uuid4(), model_id="efficientnet-lite0",
                        model_version=model_version, vector=tuple(float(v) for v in vector(seed)))


def publish(settings: Settings, events: list[PinEmbedding], tombstones: tuple[str, ...] = ()) -> None:
    with EventProducer(settings) as producer:
        for event in events:
            producer.send_event(PINS_EMBEDDINGS, event.pin_id, event)
        for pin_id in tombstones:
            producer.send_raw(settings.topic(PINS_EMBEDDINGS.name), pin_id.encode(), None)
    assert producer.failed == 0


@pytest.fixture
def settings(kafka_settings: Settings, tmp_path: Path) -> Settings:
    return kafka_settings.model_copy(update={"index_dir": tmp_path / "index"})


def test_catch_up_builds_snapshots_and_reopens_reading_only_new_records(settings: Settings) -> None:
    first = [embedding(f"p{i:08d}", i) for i in range(200)]
    other_model = [embedding(f"p{900 + i:08d}", 900 + i, model_version="old-1") for i in range(3)]
    publish(settings, first + other_model, tombstones=("p00000005",))

    seen: list[CatchupProgress] = []
    opened = open_index(settings, MODEL, progress=seen.append)
    report = opened.report
    assert report.source == "rebuilt"
    assert report.snapshot_problem == "missing"
    assert report.read == 204
    assert report.skipped_other_version == 3
    assert report.rejected == 0
    assert len(opened.index) == 199
    assert "p00000005" not in opened.index
    assert "p00000900" not in opened.index
    assert seen[0] == CatchupProgress(0, 204)
    assert seen[-1] == CatchupProgress(204, 204)
    assert sum(opened.offsets.values()) == 204
    assert opened.index.search(vector(10), k=1)[0][0].pin_id == "p00000010"
    assert (snapshot_dir(settings, MODEL) / "manifest.json").is_file()

    newer = [embedding(f"p{i:08d}", i) for i in range(200, 230)]
    publish(settings, [*newer, embedding("p00000000", 5_000)], tombstones=("p00000001",))
    reopened = open_index(settings, MODEL)
    report = reopened.report
    assert report.source == "snapshot"
    assert report.snapshot_problem is None
    assert report.start_offsets == opened.offsets
    assert report.read == 32
    assert report.upserted == 31
    assert report.deleted == 1
    assert len(reopened.index) == 199 + 30 - 1
    assert sum(reopened.offsets.values()) == 204 + 32
    assert reopened.index.search(vector(5_000), k=1)[0][0].pin_id == "p00000000"
    assert reopened.index.search(vector(215), k=1)[0][0].pin_id == "p00000215"

    unchanged = open_index(settings, MODEL)
    assert unchanged.report.read == 0
    assert unchanged.report.saved_to is None
    assert len(unchanged.index) == len(reopened.index)


def test_a_corrupt_snapshot_is_rebuilt_from_the_topic_with_the_same_content(settings: Settings) -> None:
    publish(settings, [embedding(f"p{i:08d}", i) for i in range(120)])
    built = open_index(settings, MODEL)
    queries = np.stack([vector(i) for i in range(0, 120, 7)])
    expected = built.index.search(queries, k=5)

    (index_file,) = snapshot_dir(settings, MODEL).glob("index-*")
    data = bytearray(index_file.read_bytes())
    data[len(data) // 3] ^= 0xFF
    index_file.write_bytes(bytes(data))

    rebuilt = open_index(settings, MODEL)
    assert rebuilt.report.source == "rebuilt"
    assert rebuilt.report.snapshot_problem == "corrupt: checksum"
    assert rebuilt.report.read == 120
    assert len(rebuilt.index) == 120
    assert rebuilt.offsets == built.offsets
    assert rebuilt.index.search(queries, k=5) == expected
    # the rebuild wrote a good snapshot again
    assert open_index(settings, MODEL).report.source == "snapshot"


def test_a_snapshot_of_another_model_version_is_not_used(settings: Settings) -> None:
    publish(settings, [embedding("p1", 1), embedding("p2", 2, model_version="v-next")])
    assert len(open_index(settings, MODEL).index) == 1
    # a snapshot under the other version's folder holding this version's vectors
    snapshot_dir(settings, MODEL).rename(snapshot_dir(settings, "v-next"))
    opened = open_index(settings, "v-next")
    assert opened.report.snapshot_problem == "mismatched: model version"
    assert opened.report.skipped_other_version == 1
    assert [h.pin_id for h in opened.index.search(vector(2), k=5)[0]] == ["p2"]


def test_apply_record_upserts_deletes_and_skips_live_records(settings: Settings) -> None:
    publish(settings, [embedding("p1", 1)])
    index = open_index(settings, MODEL).index
    before = index.offsets()
    publish(settings, [embedding("p2", 2), embedding("p3", 3, model_version="old-1")],
            tombstones=("p1",))

    topic = settings.topic(PINS_EMBEDDINGS.name)
    consumer = plain_consumer(settings, "index-live-test")
    consumer.assign([TopicPartition(topic, p, o) for p, o in before.items()])
    codec = build_codec(settings)
    outcomes: dict[str, Applied] = {}
    try:
        while len(outcomes) < 3:
            msg = consumer.poll(10)
            assert msg is not None, "records not delivered"
            record = raw_record(msg)
            outcomes[(record.key or b"").decode()] = apply_record(index, record, codec)
    finally:
        consumer.close()
    assert outcomes == {"p1": Applied.DELETED, "p2": Applied.UPSERTED,
                        "p3": Applied.SKIPPED_OTHER_VERSION}
    assert len(index) == 1
    assert sum(index.offsets().values()) == sum(before.values()) + 3


def test_a_rebuild_large_enough_to_train_becomes_ivf_sq8_and_reopens_from_its_snapshot(
        settings: Settings) -> None:
    ivf_settings = settings.model_copy(update={"index_kind": "ivf_sq8"})
    count = 2_600  # above 39 points x 64 lists, the smallest IVF it trains
    publish(ivf_settings, [embedding(f"p{i:08d}", i) for i in range(count)])
    built = open_index(ivf_settings, MODEL)
    assert built.report.source == "rebuilt"
    assert built.index.kind == IndexKind.IVF_SQ8
    assert len(built.index) == count
    hits = built.index.search(np.stack([vector(i) for i in range(0, count, 100)]), k=1)
    assert [row[0].pin_id for row in hits] == [f"p{i:08d}" for i in range(0, count, 100)]

    publish(ivf_settings, [embedding("p-late", 99_999)], tombstones=("p00000003",))
    reopened = open_index(ivf_settings, MODEL)
    assert reopened.report.source == "snapshot"
    assert reopened.report.read == 2
    assert reopened.index.kind == IndexKind.IVF_SQ8
    assert len(reopened.index) == count
    assert reopened.index.search(vector(99_999), k=1)[0][0].pin_id == "p-late"
