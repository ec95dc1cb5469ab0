"""The ANN index: upsert/replace/delete/search with exact expectations, id mapping and collisions,
refused vectors, the switch from exact to IVF-SQ8, and searches running beside upserts."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import numpy.typing as npt
import pytest

import sinks.faiss as faiss_sink
from sinks.faiss import IndexKind, SearchHit, VectorIndex, VectorRejectedError, nlist_for, pin_key
from streams.events import PinEmbedding

DIM = 8


def unit(*values: float) -> npt.NDArray[np.float32]:
    row = np.zeros(DIM, dtype=np.float32)
    row[: len(values)] = values
    return row / np.linalg.norm(row)


def basis(i: int) -> npt.NDArray[np.float32]:
    row = np.zeros(DIM, dtype=np.float32)
    row[i] = 1.0
    return row


def random_unit(count: int, dim: int, seed: int = 0) -> npt.NDArray[np.float32]:
    rows = np.random.default_rng(seed).random((count, dim), dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def index() -> VectorIndex:
    idx = VectorIndex("v1", DIM, kind=IndexKind.FLAT)
    for i in range(4):
        idx.upsert(f"p{i:08d}", basis(i))
    return idx


def test_pin_key_is_deterministic_63_bit_and_spreads() -> None:
    keys = [pin_key(f"p{i:08d}") for i in range(10_000)]
    assert keys[42] == pin_key("p00000042")
    assert all(0 <= key < 2**63 for key in keys)
    assert len(set(keys)) == len(keys)


def test_search_returns_exact_neighbours_with_cosine_scores(index: VectorIndex) -> None:
    hits = index.search(unit(1.0, 0.5), k=3)
    assert [h.pin_id for h in hits[0]] == ["p00000000", "p00000001", "p00000002"]
    assert hits[0][0].score == pytest.approx(1 / np.sqrt(1.25), abs=1e-6)
    assert hits[0][1].score == pytest.approx(0.5 / np.sqrt(1.25), abs=1e-6)
    assert hits[0][2].score == pytest.approx(0.0, abs=1e-6)
    assert isinstance(hits[0][0], SearchHit)


def test_search_many_queries_k_beyond_size_and_min_score(index: VectorIndex) -> None:
    hits = index.search(np.stack([basis(2), basis(3)]), k=100)
    assert [len(row) for row in hits] == [4, 4]
    assert hits[0][0] == SearchHit("p00000002", 1.0)
    assert hits[1][0] == SearchHit("p00000003", 1.0)
    above = index.search(unit(1.0, 0.9), k=10, min_score=0.5)[0]
    assert [h.pin_id for h in above] == ["p00000000", "p00000001"]
    assert [h.score for h in above] == pytest.approx([1 / np.sqrt(1.81), 0.9 / np.sqrt(1.81)])


def test_unnormalised_input_is_normalised(index: VectorIndex) -> None:
    index.upsert("p-big", basis(5) * 7.0)
    assert index.search(basis(5) * 0.1, k=1)[0] == [SearchHit("p-big", 1.0)]


def test_upsert_replaces_the_vector_of_a_present_pin(index: VectorIndex) -> None:
    index.upsert("p00000000", basis(6))
    assert len(index) == 4
    assert index.search(basis(6), k=1)[0][0].pin_id == "p00000000"
    assert [h.pin_id for h in index.search(basis(0), k=4, min_score=0.5)[0]] == []


def test_delete_removes_and_reports_absent_pins(index: VectorIndex) -> None:
    assert index.delete("p00000001") is True
    assert index.delete("p00000001") is False
    assert index.delete("never-there") is False
    assert len(index) == 3
    assert "p00000001" not in index
    assert "p00000002" in index
    assert all(h.pin_id != "p00000001" for h in index.search(basis(1), k=10)[0])


def test_empty_index_returns_empty_rows() -> None:
    assert VectorIndex("v1", DIM).search(np.stack([basis(0), basis(1)]), k=5) == [[], []]


def test_batch_upsert_last_one_wins_for_a_repeated_pin() -> None:
    idx = VectorIndex("v1", DIM)
    idx.upsert_many(["a", "b", "a"], np.stack([basis(0), basis(1), basis(2)]))
    assert len(idx) == 2
    assert idx.search(basis(2), k=1)[0] == [SearchHit("a", 1.0)]
    assert idx.search(basis(0), k=2, min_score=0.5)[0] == []


@pytest.mark.parametrize(
    ("vector", "version", "reason"),
    [
        (np.ones(DIM + 1), None, "bad_dimension"),
        (np.ones(DIM), "v2", "model_version_mismatch"),
        (np.full(DIM, np.nan), None, "bad_vector"),
        (np.zeros(DIM), None, "bad_vector"),
    ],
)
def test_refused_vectors_carry_a_reason_and_change_nothing(
        index: VectorIndex, vector: npt.NDArray[np.float64], version: str | None, reason: str) -> None:
    with pytest.raises(VectorRejectedError) as caught:
        index.upsert("p-new", vector, model_version=version)
    assert caught.value.reason == reason
    assert caught.value.pin_id == "p-new"
    assert caught.value.dependency == "faiss"
    assert len(index) == 4


def test_a_bad_vector_in_a_batch_leaves_the_index_unchanged(index: VectorIndex) -> None:
    batch = np.stack([basis(5), np.zeros(DIM, dtype=np.float32)])
    with pytest.raises(VectorRejectedError) as caught:
        index.upsert_many(["p-ok", "p-zero"], batch, offsets={0: 10})
    assert caught.value.pin_id == "p-zero"
    assert len(index) == 4
    assert index.offsets() == {}


def test_pin_ids_with_newlines_are_refused(index: VectorIndex) -> None:
    with pytest.raises(VectorRejectedError) as caught:
        index.upsert("p\n1", basis(0))
    assert caught.value.reason == "bad_pin_id"


def test_query_of_another_dimension_is_refused(index: VectorIndex) -> None:
    with pytest.raises(VectorRejectedError) as caught:
        index.search(np.ones(DIM + 2), k=1)
    assert caught.value.reason == "bad_dimension"


def test_embedding_events_of_another_model_version_are_refused() -> None:
    idx = VectorIndex("2", DIM)
    event = PinEmbedding(pin_id="p1", source_event_id=uuid.uuid4(), model_id="m",
                         model_version="2", vector=tuple(float(v) for v in basis(3)))
    idx.upsert_embedding(event)
    assert idx.search(basis(3), k=1)[0] == [SearchHit("p1", 1.0)]
    other = PinEmbedding(pin_id="p2", source_event_id=uuid.uuid4(), model_id="m",
                         model_version="1", vector=event.vector)
    with pytest.raises(VectorRejectedError) as caught:
        idx.upsert_embedding(other)
    assert caught.value.reason == "model_version_mismatch"


def test_an_id_collision_is_refused_and_never_overwrites_the_other_pin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faiss_sink, "pin_key", lambda pin_id: 7 if pin_id in ("a", "b") else 8)
    idx = VectorIndex("v1", DIM)
    idx.upsert("a", basis(0))
    with pytest.raises(VectorRejectedError) as caught:
        idx.upsert("b", basis(1))
    assert caught.value.reason == "id_collision"
    assert "a" in str(caught.value)
    assert idx.search(basis(0), k=5)[0] == [SearchHit("a", 1.0)]
    with pytest.raises(VectorRejectedError):
        VectorIndex("v1", DIM).upsert_many(["a", "b"], np.stack([basis(0), basis(1)]))
    assert idx.delete("b") is False
    assert len(idx) == 1


def test_offsets_only_move_forward_and_commit_with_the_write(index: VectorIndex) -> None:
    index.upsert("p9", basis(7), offsets={0: 5, 1: 3})
    index.delete("p9", offsets={0: 4, 2: 1})
    index.advance({1: 9})
    assert index.offsets() == {0: 5, 1: 9, 2: 1}


def test_nlist_grows_with_the_square_root_of_the_size() -> None:
    assert nlist_for(0) == 64
    assert nlist_for(100_000) == 256
    assert nlist_for(1_000_000) == 1024
    assert nlist_for(10**9) == 4096


def test_auto_stays_exact_below_flat_max_then_trains_ivf_sq8() -> None:
    dim = 32
    vectors = random_unit(3_000, dim, seed=1)
    pins = [f"p{i:08d}" for i in range(len(vectors))]
    idx = VectorIndex("v1", dim, kind=IndexKind.AUTO, flat_max=2_600)
    idx.upsert_many(pins[:2_599], vectors[:2_599])
    assert idx.kind == IndexKind.FLAT
    idx.upsert_many(pins[2_599:], vectors[2_599:])
    assert idx.kind == IndexKind.IVF_SQ8
    assert idx.trained_for == 3_000
    assert len(idx) == 3_000
    # an indexed vector finds itself first, even quantised
    found = idx.search(vectors[:50], k=1)
    assert [row[0].pin_id for row in found] == pins[:50]
    assert all(row[0].score == pytest.approx(1.0, abs=0.01) for row in found)
    # replace and delete keep working on the trained index
    idx.upsert(pins[0], vectors[1])
    idx.delete(pins[1])
    assert len(idx) == 2_999
    assert idx.search(vectors[1], k=1)[0][0].pin_id == pins[0]
    assert all(h.pin_id != pins[1] for h in idx.search(vectors[1], k=20)[0])


def test_flat_policy_never_trains() -> None:
    idx = VectorIndex("v1", 16, kind=IndexKind.FLAT, flat_max=10)
    idx.upsert_many([f"p{i}" for i in range(3_000)], random_unit(3_000, 16))
    assert idx.kind == IndexKind.FLAT
    assert idx.trained_for == 0


def test_memory_estimate_grows_with_the_collection_and_drops_when_quantised() -> None:
    dim = 64
    flat = VectorIndex("v1", dim, kind=IndexKind.FLAT)
    ivf = VectorIndex("v1", dim, kind=IndexKind.IVF_SQ8)
    vectors = random_unit(3_000, dim)
    pins = [f"p{i}" for i in range(3_000)]
    assert flat.memory_bytes() == 0
    flat.upsert_many(pins, vectors)
    ivf.upsert_many(pins, vectors)
    assert flat.memory_bytes() > 3_000 * dim * 4
    assert ivf.kind == IndexKind.IVF_SQ8
    assert ivf.memory_bytes() < flat.memory_bytes()


def test_searches_run_beside_upserts_and_deletes_from_other_threads() -> None:
    dim = 32
    vectors = random_unit(4_000, dim, seed=3)
    idx = VectorIndex("v1", dim, kind=IndexKind.AUTO, flat_max=2_500)
    idx.upsert_many([f"seed{i}" for i in range(100)], vectors[:100])
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(part: int) -> None:
        try:
            for i in range(part * 1_000, (part + 1) * 1_000, 50):
                idx.upsert_many([f"p{j}" for j in range(i, i + 50)], vectors[i:i + 50])
                idx.delete(f"p{i}")
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                for row in idx.search(vectors[:8], k=5):
                    assert 1 <= len(row) <= 5
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(p,)) for p in range(4)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    stop.set()
    for thread in readers:
        thread.join(timeout=30)
    assert errors == []
    assert len(idx) == 100 + 4_000 - 80
    assert idx.kind == IndexKind.IVF_SQ8


def test_set_nprobe_changes_the_lists_scanned_and_refuses_zero() -> None:
    dim = 32
    vectors = random_unit(3_000, dim, seed=4)
    idx = VectorIndex("v1", dim, kind=IndexKind.IVF_SQ8, nprobe=1)
    idx.upsert_many([f"p{i}" for i in range(3_000)], vectors)
    exact = VectorIndex("v1", dim, kind=IndexKind.FLAT)
    exact.upsert_many([f"p{i}" for i in range(3_000)], vectors)
    queries = random_unit(40, dim, seed=5)

    def agreement() -> float:
        got = idx.search(queries, k=10)
        want = exact.search(queries, k=10)
        return float(np.mean([len({h.pin_id for h in g} & {h.pin_id for h in w}) / 10
                              for g, w in zip(got, want, strict=True)]))

    narrow = agreement()
    idx.set_nprobe(64)  # every list: only quantisation separates it from exact search
    assert agreement() > max(narrow, 0.9)
    with pytest.raises(ValueError):
        idx.set_nprobe(0)
