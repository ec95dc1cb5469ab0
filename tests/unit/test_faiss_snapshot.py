"""ANN index snapshots: round trips give the same answers; a flipped byte, a truncated or missing
file, or another model version are detected and named; a failed save leaves no temp file and the
previous snapshot intact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import sinks.faiss_snapshot as snapshot_io
from sinks.faiss import IndexKind, VectorIndex
from sinks.faiss_snapshot import MANIFEST_NAME, SnapshotError, read_snapshot
from streams.errors import SinkError

DIM = 32


def vectors(count: int, seed: int = 0) -> npt.NDArray[np.float32]:
    rows = np.random.default_rng(seed).random((count, DIM), dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def build(kind: IndexKind, count: int = 3_000) -> VectorIndex:
    idx = VectorIndex("v1", DIM, kind=kind, topic="pins.embeddings.v1")
    idx.upsert_many([f"p{i:08d}" for i in range(count)], vectors(count), offsets={0: 1_500, 3: 1_600})
    idx.delete("p00000007", offsets={3: 1_601})
    return idx


def data_file(directory: Path, prefix: str) -> Path:
    (path,) = directory.glob(f"{prefix}-*")
    return path


@pytest.fixture
def saved(tmp_path: Path) -> tuple[VectorIndex, Path]:
    idx = build(IndexKind.IVF_SQ8)
    idx.save(tmp_path / "snap")
    return idx, tmp_path / "snap"


@pytest.mark.parametrize("kind", [IndexKind.FLAT, IndexKind.IVF_SQ8])
def test_round_trip_gives_the_same_search_results_offsets_and_kind(kind: IndexKind, tmp_path: Path) -> None:
    idx = build(kind)
    assert idx.kind == kind
    idx.save(tmp_path)
    loaded = VectorIndex.load(tmp_path, "v1", expected_dim=DIM, expected_topic="pins.embeddings.v1")
    queries = vectors(20, seed=9)
    assert loaded.search(queries, k=10) == idx.search(queries, k=10)
    assert len(loaded) == len(idx) == 2_999
    assert loaded.kind == kind
    assert loaded.trained_for == idx.trained_for
    assert loaded.offsets() == {0: 1_500, 3: 1_601}
    assert "p00000007" not in loaded
    # the loaded index keeps accepting upserts and deletes
    loaded.upsert("p00000007", queries[0])
    assert loaded.delete("p00000008")
    assert loaded.search(queries[0], k=1)[0][0].pin_id == "p00000007"


def test_manifest_names_version_dimension_offsets_and_checksum(saved: tuple[VectorIndex, Path]) -> None:
    _, directory = saved
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    assert manifest["meta"]["model_version"] == "v1"
    assert manifest["meta"]["dim"] == DIM
    assert manifest["meta"]["offsets"] == {"0": 1_500, "3": 1_601}
    assert manifest["meta"]["kind"] == "ivf_sq8"
    assert len(manifest["sha256"]) == 64
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [MANIFEST_NAME, manifest["files"]["index"]["name"], manifest["files"]["pins"]["name"]])


def test_missing_snapshot_is_reported_as_missing(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError) as caught:
        VectorIndex.load(tmp_path / "nothing-here", "v1")
    assert caught.value.reason == "missing"
    assert caught.value.summary == "missing"


@pytest.mark.parametrize("prefix", ["index", "pins"])
def test_a_flipped_byte_in_a_data_file_fails_the_checksum(
        saved: tuple[VectorIndex, Path], prefix: str) -> None:
    _, directory = saved
    path = data_file(directory, prefix)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError) as caught:
        VectorIndex.load(directory, "v1")
    assert caught.value.reason == "corrupt"
    assert caught.value.summary == "corrupt: checksum"


def test_an_edited_manifest_offset_fails_the_checksum(saved: tuple[VectorIndex, Path]) -> None:
    _, directory = saved
    manifest_path = directory / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["meta"]["offsets"]["0"] = 0
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError) as caught:
        VectorIndex.load(directory, "v1")
    assert caught.value.summary == "corrupt: checksum"


def test_a_manifest_that_is_not_json_is_corrupt(saved: tuple[VectorIndex, Path]) -> None:
    _, directory = saved
    (directory / MANIFEST_NAME).write_bytes(b'{"format": "pinstream-ann-sn')
    with pytest.raises(SnapshotError) as caught:
        VectorIndex.load(directory, "v1")
    assert caught.value.summary == "corrupt: manifest"


def test_a_truncated_index_file_is_detected(saved: tuple[VectorIndex, Path]) -> None:
    _, directory = saved
    path = data_file(directory, "index")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SnapshotError) as caught:
        VectorIndex.load(directory, "v1")
    assert caught.value.summary == "corrupt: truncated"


def test_a_missing_data_file_is_detected(saved: tuple[VectorIndex, Path]) -> None:
    _, directory = saved
    data_file(directory, "pins").unlink()
    with pytest.raises(SnapshotError) as caught:
        VectorIndex.load(directory, "v1")
    assert caught.value.summary == "corrupt: data file missing"


@pytest.mark.parametrize(
    ("kwargs", "detail"),
    [
        ({"expected_model_version": "v2"}, "model version"),
        ({"expected_model_version": "v1", "expected_dim": DIM * 2}, "dimension"),
        ({"expected_model_version": "v1", "expected_topic": "other.v1"}, "topic"),
    ],
)
def test_a_snapshot_of_another_version_dimension_or_topic_is_mismatched(
        saved: tuple[VectorIndex, Path], kwargs: dict[str, object], detail: str) -> None:
    _, directory = saved
    with pytest.raises(SnapshotError) as caught:
        read_snapshot(directory, **kwargs)  # type: ignore[arg-type]
    assert caught.value.reason == "mismatched"
    assert caught.value.summary == f"mismatched: {detail}"
    assert isinstance(caught.value, SinkError)


def test_a_failed_index_write_leaves_no_temp_file_and_the_old_snapshot_intact(
        saved: tuple[VectorIndex, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    idx, directory = saved
    before = sorted(p.name for p in directory.iterdir())

    def half_written(index: object, name: str) -> None:
        Path(name).write_bytes(b"partial")
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(snapshot_io.faiss, "write_index", half_written)
    idx.upsert("p-late", vectors(1, seed=5)[0])
    with pytest.raises(SinkError, match="No space left"):
        idx.save(directory)
    assert sorted(p.name for p in directory.iterdir()) == before
    assert len(VectorIndex.load(directory, "v1")) == 2_999


def test_a_failed_manifest_write_removes_the_new_data_files(
        saved: tuple[VectorIndex, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    idx, directory = saved
    before = sorted(p.name for p in directory.iterdir())
    real_dumps = json.dumps

    def failing_dumps(obj: object, **kwargs: object) -> str:
        if isinstance(obj, dict) and "sha256" in obj:
            raise OSError("disk full")
        return real_dumps(obj, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(snapshot_io.json, "dumps", failing_dumps)
    with pytest.raises(OSError, match="disk full"):
        idx.save(directory)
    monkeypatch.undo()
    assert sorted(p.name for p in directory.iterdir()) == before
    assert len(VectorIndex.load(directory, "v1")) == 2_999


def test_a_new_save_replaces_the_old_files_and_clears_leftover_temp_files(
        saved: tuple[VectorIndex, Path]) -> None:
    idx, directory = saved
    (directory / ".index-dead.faiss.tmp").write_bytes(b"left by a crash")
    idx.upsert("p-new", vectors(1, seed=6)[0], offsets={0: 1_700})
    idx.save(directory)
    names = sorted(p.name for p in directory.iterdir())
    assert len(names) == 3
    assert not any(name.endswith(".tmp") for name in names)
    loaded = VectorIndex.load(directory, "v1")
    assert "p-new" in loaded
    assert loaded.offsets()[0] == 1_700


def test_an_empty_index_round_trips(tmp_path: Path) -> None:
    VectorIndex("v1", DIM).save(tmp_path)
    loaded = VectorIndex.load(tmp_path, "v1")
    assert len(loaded) == 0
    assert loaded.search(vectors(1)[0], k=3) == [[]]
