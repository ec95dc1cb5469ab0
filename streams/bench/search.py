"""`pinstream bench search`: ANN query latency, recall@10 against exact search, memory per vector
and build time, for our `VectorIndex` and for the candidate faiss index types it was chosen from.

Vectors are synthetic but shaped like pooled CNN features: a mixture of gaussians in a random
low-rank subspace plus a shared positive mean and full-rank noise, passed through ReLU (pooled
post-activation features are non-negative) and L2-normalised. Real embeddings may be easier or
harder; when `bench/cache/*.npy` holds real ones, they are measured too. The ground truth is exact
inner-product search (numpy over chunks); the bare-library ceiling is faiss `IndexFlatIP`.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from sinks.faiss import IndexKind, VectorIndex, nlist_for

DIM = 1280
K = 10
CHUNK = 50_000
REAL_EMBEDDINGS_GLOB = "bench/cache/*.npy"
IVF_TRAIN_MAX = 100_000  # IVF/PQ/OPQ candidates train on the first vectors, at most this many
OUR_NPROBES = (16, 32, 64)
# this bench times the ANN step alone; the whole request is timed over HTTP by another bench
END_TO_END = "not measured here: see `pinstream bench pins` (HTTP POST /search/visual)"

FloatRows = npt.NDArray[np.float32]
Progress = Callable[[str], None]


# --- data -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyntheticEmbeddings:
    """Deterministic embedding-like vectors: any chunk can be regenerated from (seed, start)."""

    dim: int = DIM
    rank: int = 64
    clusters: int = 4_000
    cluster_noise: float = 0.45
    full_rank_noise: float = 0.15
    mean_scale: float = 0.6
    seed: int = 7

    def describe(self) -> str:
        return (f"{self.clusters} gaussian clusters in a random {self.rank}-d subspace of {self.dim}-d, "
                f"plus a shared positive mean and full-rank noise, ReLU, L2-normalised (seed {self.seed})")

    def _model(self) -> tuple[FloatRows, FloatRows, FloatRows]:
        rng = np.random.default_rng(self.seed)
        basis = rng.standard_normal((self.rank, self.dim), dtype=np.float32) / math.sqrt(self.rank)
        centres = rng.standard_normal((self.clusters, self.rank), dtype=np.float32)
        mean = (np.abs(rng.standard_normal(self.dim, dtype=np.float32)) * self.mean_scale).astype(np.float32)
        return basis, centres, mean

    def chunk(self, start: int, count: int, *, stream: int = 0) -> FloatRows:
        """Rows `start .. start+count` of stream `stream` (0: the collection, 1: queries)."""
        basis, centres, mean = self._model()
        rng = np.random.default_rng([self.seed, stream, start])
        labels = rng.integers(self.clusters, size=count)
        latent = centres[labels] + self.cluster_noise * rng.standard_normal(
            (count, self.rank), dtype=np.float32)
        rows = latent @ basis
        rows += mean
        rows += self.full_rank_noise * rng.standard_normal((count, self.dim), dtype=np.float32)
        np.maximum(rows, 0, out=rows)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        assert rows.dtype == np.float32  # a float64 scalar anywhere above would double the work
        return rows


def materialise(data: SyntheticEmbeddings, count: int, path: Path, progress: Progress) -> FloatRows:
    """Write `count` vectors to a .npy file and map it (never the whole float32 set in RAM)."""
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, data.dim))
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        rows[start:start + n] = data.chunk(start, n)
        progress(f"generating vectors: {start + n:,}/{count:,}")
    rows.flush()
    return np.load(path, mmap_mode="r")


def chunks(rows: FloatRows, size: int = CHUNK) -> Iterator[tuple[int, FloatRows]]:
    for start in range(0, rows.shape[0], size):
        yield start, np.ascontiguousarray(rows[start:start + size], dtype=np.float32)


def exact_top_k(rows: FloatRows, queries: FloatRows, k: int, progress: Progress) -> npt.NDArray[np.int64]:
    """Ids of the exact top-k by inner product, one chunk of the collection at a time."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for start, part in chunks(rows):
        scores = queries @ part.T
        top = np.argpartition(-scores, min(k, part.shape[0] - 1), axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        merged_ids = np.concatenate([best_ids, top + start], axis=1)
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, order, axis=1)
        best_ids = np.take_along_axis(merged_ids, order, axis=1)
        progress(f"exact ground truth: {start + part.shape[0]:,}/{rows.shape[0]:,}")
    return best_ids


def recall_at_k(found: npt.NDArray[np.int64], truth: npt.NDArray[np.int64], k: int = K) -> float:
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))


def rss_bytes() -> int:
    """Anonymous resident memory of this process now (Linux; 0 elsewhere).

    Anonymous only: pages of the memory-mapped vector file are the page cache, not the index.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc), so RSS shows what is live, not what was."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# --- candidates -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Knob:
    """One search-time setting of a candidate (e.g. nprobe=32)."""

    label: str
    apply: Callable[[faiss.Index], None]


@dataclass(frozen=True, slots=True)
class Candidate:
    key: str
    name: str
    build: Callable[[int], faiss.Index]  # collection size -> an empty (maybe untrained) index
    knobs: Callable[[], Sequence[Knob]]
    updates: str  # how deletes/replacements work with it
    default_max_size: int | None = None  # larger collections only when asked for by name
    latency_queries: int | None = None  # fewer one-query timings for slow (exact) searches


def _nprobe(value: int) -> Knob:
    def apply(index: faiss.Index) -> None:
        faiss.extract_index_ivf(index).nprobe = value
    return Knob(f"nprobe={value}", apply)


def _ef_search(value: int) -> Knob:
    def apply(index: faiss.Index) -> None:
        hnsw = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
        assert isinstance(hnsw, faiss.IndexHNSW)
        hnsw.hnsw.efSearch = value
    return Knob(f"efSearch={value}", apply)


def _refine(nprobe: int, k_factor: int) -> Knob:
    def apply(index: faiss.Index) -> None:
        assert isinstance(index, faiss.IndexRefine)
        faiss.extract_index_ivf(index.base_index).nprobe = nprobe
        index.k_factor = k_factor
    return Knob(f"nprobe={nprobe} k_factor={k_factor}", apply)


def _ivf_pq_refine(size: int) -> faiss.Index:
    base = faiss.index_factory(DIM, f"OPQ64_256,IVF{nlist_for(size)},PQ64", faiss.METRIC_INNER_PRODUCT)
    assert isinstance(base, faiss.IndexPreTransform)
    opq = faiss.downcast_VectorTransform(base.chain.at(0))  # type: ignore[attr-defined]
    assert isinstance(opq, faiss.OPQMatrix)
    opq.niter = 10  # the default 50 takes tens of minutes on 2 shared cores; 10 converges well enough
    store = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    return faiss.IndexRefine(base, store)


def _hnsw_sq8(size: int) -> faiss.Index:
    index = faiss.index_factory(DIM, "HNSW32,SQ8", faiss.METRIC_INNER_PRODUCT)
    assert isinstance(index, faiss.IndexHNSW)
    index.hnsw.efConstruction = 40
    return index


CANDIDATES: dict[str, Candidate] = {c.key: c for c in (
    Candidate("flat", "Flat (exact, float32)",
              lambda size: faiss.IndexFlatIP(DIM), lambda: [Knob("exact", lambda index: None)],
              "remove_ids", latency_queries=30),
    Candidate("ivf_sq8", "IVF-SQ8 (lists ~ sqrt n)",
              lambda size: faiss.index_factory(DIM, f"IVF{nlist_for(size)},SQ8", faiss.METRIC_INNER_PRODUCT),
              lambda: [_nprobe(v) for v in (8, 16, 32, 64, 128)], "remove_ids (hash-table direct map)"),
    Candidate("ivfpq_refine", "OPQ64 IVF-PQ64 + SQ8 re-rank", _ivf_pq_refine,
              lambda: [_refine(16, 10), _refine(32, 10), _refine(32, 20), _refine(64, 40)],
              "no remove_ids on IndexRefine: tombstones + rebuild"),
    Candidate("hnsw_sq8", "HNSW32 over SQ8", _hnsw_sq8,
              lambda: [_ef_search(v) for v in (32, 64, 128, 256)], "no removal: tombstones + rebuild",
              default_max_size=200_000),
    Candidate("pca_hnsw", "PCA256 + HNSW32 (float32)",
              lambda size: faiss.index_factory(DIM, "PCA256,HNSW32", faiss.METRIC_L2),
              lambda: [_ef_search(v) for v in (32, 64, 128, 256)], "no removal: tombstones + rebuild",
              default_max_size=200_000),
)}
DEFAULT_CANDIDATES = ("flat", "ivf_sq8", "ivfpq_refine", "hnsw_sq8", "pca_hnsw")


# --- measurement ----------------------------------------------------------------------------


@dataclass
class KnobResult:
    label: str
    recall_at_10: float
    p50_ms: float  # medians over repetitions of each repetition's percentile
    p99_ms: float
    p50_runs: list[float] = field(default_factory=list)
    p99_runs: list[float] = field(default_factory=list)
    # ours only: bare faiss search on the very same index, timed query by query in turn with ours
    bare_p50_ms: float | None = None
    bare_p99_ms: float | None = None

    @property
    def p50_vs_bare(self) -> float | None:
        """Our p50 over bare faiss's p50 on the same index (1.0 = no overhead)."""
        return None if self.bare_p50_ms is None else self.p50_ms / self.bare_p50_ms


@dataclass
class CandidateResult:
    key: str
    name: str
    size: int
    updates: str
    train_s: float = 0.0
    add_s: float = 0.0
    trained_on: int = 0
    serialized_bytes_per_vector: float = 0.0
    rss_bytes_per_vector: float | None = None  # right after building by upserts
    rss_after_load_bytes_per_vector: float | None = None  # loaded from its snapshot (a restart)
    estimated_bytes_per_vector: float | None = None
    snapshot_save_s: float | None = None
    snapshot_load_s: float | None = None
    knobs: list[KnobResult] = field(default_factory=list)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["knobs"] = [dict(k.__dict__) | {"p50_vs_bare": k.p50_vs_bare} for k in self.knobs]
        return data


def single_query_latencies(search: Callable[[FloatRows], object], queries: FloatRows,
                           repeat: int) -> tuple[float, float, list[float], list[float]]:
    """p50/p99 in ms of one-query searches: each repetition runs all queries; medians of those."""
    p50s: list[float] = []
    p99s: list[float] = []
    for _ in range(repeat):
        laps: list[float] = []
        for i in range(len(queries)):
            one = queries[i:i + 1]
            started = time.perf_counter()
            search(one)
            laps.append((time.perf_counter() - started) * 1000)
        p50s.append(float(np.percentile(laps, 50)))
        p99s.append(float(np.percentile(laps, 99)))
    return statistics.median(p50s), statistics.median(p99s), p50s, p99s


def paired_latencies(ours: Callable[[FloatRows], object], bare: Callable[[FloatRows], object],
                     queries: FloatRows, repeat: int) -> tuple[list[float], list[float], list[float],
                                                                list[float]]:
    """Per repetition p50/p99 (ms) of `ours` and `bare`, the two timed in turn on each query so
    that load from other processes falls on both alike."""
    ours_p50: list[float] = []
    ours_p99: list[float] = []
    bare_p50: list[float] = []
    bare_p99: list[float] = []
    for rep in range(repeat):
        ours_laps: list[float] = []
        bare_laps: list[float] = []
        for i in range(len(queries)):
            one = queries[i:i + 1]
            pair = ((ours, ours_laps), (bare, bare_laps))
            for search, laps in pair if (i + rep) % 2 == 0 else pair[::-1]:
                started = time.perf_counter()
                search(one)
                laps.append((time.perf_counter() - started) * 1000)
        ours_p50.append(float(np.percentile(ours_laps, 50)))
        ours_p99.append(float(np.percentile(ours_laps, 99)))
        bare_p50.append(float(np.percentile(bare_laps, 50)))
        bare_p99.append(float(np.percentile(bare_laps, 99)))
    return ours_p50, ours_p99, bare_p50, bare_p99


def bare_search(index: faiss.Index, queries: FloatRows) -> object:
    return index.search(queries, K)


def serialized_size(index: faiss.Index, scratch: Path) -> int:
    path = scratch / "sized.faiss"
    faiss.write_index(index, str(path))
    size = path.stat().st_size
    path.unlink()
    return size


def measure_candidate(candidate: Candidate, rows: FloatRows, queries: FloatRows,
                      truth: npt.NDArray[np.int64], repeat: int, scratch: Path,
                      progress: Progress) -> CandidateResult:
    size = rows.shape[0]
    result = CandidateResult(candidate.key, candidate.name, size, candidate.updates)
    index = candidate.build(size)
    if not index.is_trained:
        result.trained_on = min(size, IVF_TRAIN_MAX)
        progress(f"{candidate.name}: training on the first {result.trained_on:,} vectors")
        started = time.perf_counter()
        index.train(np.ascontiguousarray(rows[:result.trained_on]))
        result.train_s = time.perf_counter() - started
    started = time.perf_counter()
    for start, part in chunks(rows):
        index.add(part)
        progress(f"{candidate.name}: added {start + part.shape[0]:,}/{size:,}")
    result.add_s = time.perf_counter() - started
    result.serialized_bytes_per_vector = serialized_size(index, scratch) / size
    for knob in candidate.knobs():
        progress(f"{candidate.name}: searching with {knob.label}")
        knob.apply(index)
        _, found = index.search(queries, K)
        timed_queries = queries[:candidate.latency_queries or len(queries)]
        p50, p99, p50s, p99s = single_query_latencies(lambda q: index.search(q, K), timed_queries,
                                                      repeat)
        result.knobs.append(KnobResult(knob.label, recall_at_k(found, truth), p50, p99, p50s, p99s))
    return result


def measure_ours(rows: FloatRows, queries: FloatRows, truth: npt.NDArray[np.int64], repeat: int,
                 nprobe: int, scratch: Path, progress: Progress) -> CandidateResult:
    """`VectorIndex` as the product uses it: pin ids, upserts in batches, the lock, normalisation."""
    size = rows.shape[0]
    result = CandidateResult("ours", "VectorIndex (auto)", size, "upsert/delete in place")
    release_free_heap()
    before = rss_bytes()
    index = VectorIndex("bench", DIM, kind=IndexKind.AUTO, nprobe=nprobe, expected_size=size)
    started = time.perf_counter()
    for start, part in chunks(rows, 10_000):
        index.upsert_many([f"p{start + i:08d}" for i in range(part.shape[0])], part)
        progress(f"VectorIndex: upserted {start + part.shape[0]:,}/{size:,} ({index.kind})")
    result.add_s = time.perf_counter() - started
    result.rss_bytes_per_vector = (rss_bytes() - before) / size
    result.estimated_bytes_per_vector = index.memory_bytes() / size
    result.trained_on = index.trained_on
    result.name = f"VectorIndex ({index.kind})"
    started = time.perf_counter()
    index.save(scratch / "snapshot")
    result.snapshot_save_s = time.perf_counter() - started
    result.serialized_bytes_per_vector = sum(
        p.stat().st_size for p in (scratch / "snapshot").iterdir()) / size
    progress("VectorIndex: loading the snapshot back")
    del index
    gc.collect()
    release_free_heap()
    started = time.perf_counter()
    index = VectorIndex.load(scratch / "snapshot", "bench", nprobe=nprobe)
    result.snapshot_load_s = time.perf_counter() - started
    release_free_heap()
    result.rss_after_load_bytes_per_vector = (rss_bytes() - before) / size

    def ids_of(hits: list[list[Any]]) -> npt.NDArray[np.int64]:
        return np.array([[int(h.pin_id[1:]) for h in row] + [-1] * (K - len(row)) for row in hits])

    for probes in sorted({*OUR_NPROBES, nprobe}):
        if probes != nprobe and index.kind != IndexKind.IVF_SQ8:
            continue
        progress(f"VectorIndex: searching with nprobe={probes}")
        index.set_nprobe(probes)
        found = ids_of(index.search(queries, K))
        p50s, p99s, bare_p50s, bare_p99s = paired_latencies(
            partial(index.search, k=K), partial(bare_search, index.faiss_index), queries, repeat)
        label = f"nprobe={probes}" + (" (default)" if probes == nprobe else "")
        result.knobs.append(KnobResult(
            label, recall_at_k(found, truth), statistics.median(p50s), statistics.median(p99s),
            p50s, p99s, statistics.median(bare_p50s), statistics.median(bare_p99s)))
    for path in (scratch / "snapshot").iterdir():
        path.unlink()
    return result


@dataclass
class SizeResult:
    size: int
    dataset: str
    queries: int
    results: list[CandidateResult] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "dataset": self.dataset, "queries": self.queries,
                "load_average_before": list(self.load_before),
                "load_average_after": list(self.load_after),
                "results": [r.to_json() for r in self.results]}


def run_on_rows(rows: FloatRows, queries: FloatRows, dataset: str, candidates: Sequence[str],
                repeat: int, nprobe: int, scratch: Path, progress: Progress) -> SizeResult:
    """Ours first (its RSS is measured on a quiet heap), then each bare candidate."""
    out = SizeResult(rows.shape[0], dataset, len(queries), load_before=os.getloadavg())
    truth = exact_top_k(rows, queries, K, progress)
    out.results.append(measure_ours(rows, queries, truth, repeat, nprobe, scratch, progress))
    for key in candidates:
        out.results.append(measure_candidate(CANDIDATES[key], rows, queries, truth, repeat, scratch,
                                             progress))
    out.load_after = os.getloadavg()
    return out


def default_candidates(size: int) -> list[str]:
    """Every candidate, except the slow-to-build ones above their default size."""
    return [key for key in DEFAULT_CANDIDATES
            if CANDIDATES[key].default_max_size is None or size <= (CANDIDATES[key].default_max_size or 0)]


def run_search_bench(sizes: Sequence[int], *, queries: int = 500, repeat: int = 3,
                     candidates: Sequence[str] | None = None, nprobe: int = 32,
                     threads: int = 2, data: SyntheticEmbeddings | None = None,
                     real_files: Sequence[Path] = (), progress: Progress = lambda _: None,
                     ) -> list[SizeResult]:
    """Measure every candidate at every size on synthetic vectors, then on each real file."""
    faiss.omp_set_num_threads(threads)
    data = data or SyntheticEmbeddings()
    query_rows = data.chunk(0, queries, stream=1)
    results: list[SizeResult] = []
    with tempfile.TemporaryDirectory(prefix="pinstream-bench-search-") as tmp:
        scratch = Path(tmp)
        for size in sizes:
            rows = materialise(data, size, scratch / "rows.npy", progress)
            chosen = list(candidates) if candidates is not None else default_candidates(size)
            results.append(run_on_rows(rows, query_rows, f"synthetic: {data.describe()}", chosen,
                                       repeat, nprobe, scratch, progress))
            del rows
            (scratch / "rows.npy").unlink()
        for path in real_files:
            real = np.load(path, mmap_mode="r")
            if real.ndim != 2 or real.shape[1] != DIM or real.shape[0] < 1_000:
                progress(f"skipping {path}: shape {real.shape}, need (>=1000, {DIM})")
                continue
            rows = np.asarray(real, dtype=np.float32)
            rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
            held_out = min(queries, rows.shape[0] // 10)
            results.append(run_on_rows(rows[:-held_out], np.ascontiguousarray(rows[-held_out:]),
                                       f"real: {path.name}", ["flat", "ivf_sq8"],
                                       repeat, nprobe, scratch, progress))
    return results


def real_embedding_files(pattern: str = REAL_EMBEDDINGS_GLOB) -> list[Path]:
    return sorted(Path().glob(pattern))


def bytes_label(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.0f}"


def to_json(results: Sequence[SizeResult], command: str, params: dict[str, Any]) -> dict[str, Any]:
    from streams.bench.report import code_revision, machine_info

    return {
        "bench": "search",
        "command": command,
        "revision": code_revision(),
        "machine": machine_info(["faiss-cpu", "numpy", "pinstream"]),
        "params": params | {"k": K, "dim": DIM, "ivf_train_max": IVF_TRAIN_MAX},
        "end_to_end_visual_search": END_TO_END,
        "sizes": [r.to_json() for r in results],
    }


def table_rows(result: SizeResult) -> list[list[str]]:
    """One row per candidate and search setting: the figures the doc and the console show."""
    rows: list[list[str]] = []
    for cand in result.results:
        build = cand.train_s + cand.add_s
        for knob in cand.knobs:
            rows.append([
                cand.name, knob.label, f"{knob.recall_at_10:.3f}", f"{knob.p50_ms:.2f}",
                f"{knob.p99_ms:.2f}", "-" if knob.p50_vs_bare is None else f"{knob.p50_vs_bare:.2f}",
                bytes_label(cand.serialized_bytes_per_vector),
                _rss_label(cand), f"{build:,.0f}", cand.updates,
            ])
    return rows


TABLE_COLUMNS = ["index", "setting", "recall@10", "p50 ms", "p99 ms", "p50 vs bare", "bytes/vec (file)",
                 "bytes/vec (RSS built / loaded)", "build s", "deletes/updates"]


def _rss_label(cand: CandidateResult) -> str:
    if cand.rss_bytes_per_vector is None:
        return "-"
    return f"{bytes_label(cand.rss_bytes_per_vector)} / {bytes_label(cand.rss_after_load_bytes_per_vector)}"


def markdown_table(result: SizeResult) -> str:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result)]
    return "\n".join(lines)
