"""`pinstream bench search` pieces: the synthetic embeddings look like pooled CNN features, the
exact ground truth is exact, and the command runs end to end on a small collection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from streams.bench.search import SyntheticEmbeddings, exact_top_k, recall_at_k


def test_synthetic_vectors_are_non_negative_unit_length_and_reproducible_by_chunk() -> None:
    data = SyntheticEmbeddings(dim=64, rank=8, clusters=20)
    rows = data.chunk(0, 500)
    assert rows.shape == (500, 64)
    assert rows.dtype == np.float32
    assert (rows >= 0).all()
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(data.chunk(0, 500), rows)
    assert not np.array_equal(data.chunk(500, 500), rows)
    assert not np.array_equal(data.chunk(0, 500, stream=1), rows)


def test_synthetic_neighbours_are_closer_than_random_pairs() -> None:
    rows = SyntheticEmbeddings().chunk(0, 2_000)
    scores = rows[:50] @ rows[50:].T
    assert np.median(scores.max(axis=1)) > np.median(scores) + 0.2


def test_exact_top_k_matches_brute_force_across_chunks() -> None:
    rng = np.random.default_rng(0)
    rows = rng.random((1_200, 16), dtype=np.float32)
    queries = rng.random((7, 16), dtype=np.float32)
    import streams.bench.search as bench

    original = bench.CHUNK
    bench.CHUNK = 500
    try:
        found = exact_top_k(rows, queries, 10, lambda _: None)
    finally:
        bench.CHUNK = original
    expected = np.argsort(-(queries @ rows.T), axis=1)[:, :10]
    assert np.array_equal(found, expected)
    assert recall_at_k(found, expected) == 1.0
    assert recall_at_k(found[:, ::-1], expected) == 1.0
    assert recall_at_k(np.full_like(found, -1), expected) == 0.0


def test_bench_search_command_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "search.json"
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "bench", "search", "--sizes", "3000", "--queries", "20",
         "--repeat", "1", "--candidates", "flat,ivf_sq8", "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "recall@10" in result.stdout
    assert "pinstream bench pins" in result.stdout
    payload = json.loads(out.read_text())
    (size,) = payload["sizes"]
    assert size["size"] == 3_000
    names = [r["key"] for r in size["results"]]
    assert names == ["ours", "flat", "ivf_sq8"]
    flat = size["results"][1]
    assert flat["knobs"][0]["recall_at_10"] == 1.0
    assert all(0 <= k["recall_at_10"] <= 1 for r in size["results"] for k in r["knobs"])


def test_bench_search_refuses_unknown_candidates(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "bench", "search", "--candidates", "annoy"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "unknown candidates ['annoy']" in result.stderr
