"""`pinstream bench quality`: near-duplicate retrieval. Each bundled photo, distorted, must find
its original among >= 10k generated distractor pins: recall@1/@10 for our embedder, an untrained
network of the same shape, and a colour histogram, by exact inner-product search.
"""

from __future__ import annotations

import io
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from processors.images import ImageLimits, decode_image
from streams.bench.report import code_revision, machine_info
from streams.workload.images import augment, available_photos, encode_jpeg, load_photo, render_pin_image
from streams.workload.themes import TOPICS, make_theme

CACHE_DIR = Path("bench/cache")
DISTORTIONS = ("crop", "rescale", "jpeg", "colour", "flip", "rotate", "all")
HISTOGRAM_BINS = 8
CHUNK = 16

Vectors = np.ndarray[Any, np.dtype[np.float32]]
Featurize = Callable[[list[Image.Image]], Vectors]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Method:
    """A way to turn images into unit vectors; `key` names its cached distractor vectors."""

    name: str
    key: str
    featurize: Featurize


def colour_histogram(images: list[Image.Image]) -> Vectors:
    """8x8x8 RGB histograms of 128-px thumbnails, L2-normalised: the no-learning baseline."""
    rows = []
    shift = 8 - int(math.log2(HISTOGRAM_BINS))
    for image in images:
        small = image.convert("RGB").copy()
        small.thumbnail((128, 128))
        pixels = np.asarray(small, dtype=np.uint8).reshape(-1, 3) >> shift
        r, g, b = (pixels[:, c].astype(np.int64) for c in range(3))
        index = (r * HISTOGRAM_BINS + g) * HISTOGRAM_BINS + b
        rows.append(np.bincount(index, minlength=HISTOGRAM_BINS**3).astype(np.float32))
    matrix = np.stack(rows)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def distort(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """One distortion of `kind` (DISTORTIONS); "all" is the workload's combined augmentation."""
    w, h = image.size
    if kind == "crop":  # keep 50-85 % of the area, anywhere
        keep = math.sqrt(rng.uniform(0.5, 0.85))
        cw, ch = round(w * keep), round(h * keep)
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return image.crop((left, top, left + cw, top + ch))
    if kind == "rescale":  # 0.3x to 2x
        scale = float(rng.uniform(0.3, 2.0))
        return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    if kind == "jpeg":  # heavy recompression
        return Image.open(io.BytesIO(encode_jpeg(image, int(rng.integers(10, 40))))).convert("RGB")
    if kind == "colour":
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhancer(image).enhance(float(rng.uniform(0.6, 1.4)))
        return image
    if kind == "flip":
        return ImageOps.mirror(image)
    if kind == "rotate":  # +-5..15 degrees, cropped to the centre 80 % to drop most blank corners
        turned = image.rotate(float(rng.choice([-1, 1]) * rng.uniform(5, 15)), Image.Resampling.BILINEAR)
        return turned.crop((round(w * 0.1), round(h * 0.1), round(w * 0.9), round(h * 0.9)))
    if kind == "all":
        return augment(image, rng)
    raise ValueError(f"unknown distortion {kind!r}")


def distractor_label(index: int, topics: Sequence[Any]) -> str:
    """The base of distractor `index`: its photo's name, or "drawing" (procedural, unrelated)."""
    topic = topics[index % len(topics)]
    return str(topic.source) if topic.kind == "photo" else "drawing"


def usable_topics() -> list[Any]:
    photos = set(available_photos())
    return [t for t in TOPICS if t.kind == "drawing" or t.source in photos]


def render_distractors(count: int, seed: int, start: int = 0) -> Iterator[bytes]:
    """Distractor pins as JPEG bytes: every topic in turn, each pin its own framing, tint and
    augmentation; pin i depends only on (seed, i), so any prefix is reproducible.
    """
    topics = usable_topics()
    for i in range(start, count):
        topic = topics[i % len(topics)]
        theme = make_theme(topic, i // len(topics) % 3, random.Random(seed * 1_000_003 + i))
        yield render_pin_image(np.random.default_rng([seed, i]), theme)


def decode_all(jpegs: Sequence[bytes]) -> list[Image.Image]:
    limits = ImageLimits()
    return [decode_image(data, limits) for data in jpegs]


def distractor_vectors(methods: Sequence[Method], count: int, seed: int, progress: Progress,
                       cache_dir: Path = CACHE_DIR) -> dict[str, Vectors]:
    """Every method's distractor vectors, from the cache when present; missing ones are computed
    in one rendering pass and cached (.npy per method, size and seed).
    """
    paths = {m.name: cache_dir / f"distractors-{m.key}-n{count}-s{seed}.npy" for m in methods}
    out = {m.name: np.load(paths[m.name]) for m in methods if paths[m.name].exists()}
    missing = [m for m in methods if m.name not in out]
    if not missing:
        return out
    parts: dict[str, list[Vectors]] = {m.name: [] for m in missing}
    started, done = time.perf_counter(), 0
    pending: list[bytes] = []
    for data in render_distractors(count, seed):
        pending.append(data)
        if len(pending) == CHUNK or done + len(pending) == count:
            images = decode_all(pending)
            for method in missing:
                parts[method.name].append(method.featurize(images))
            done += len(pending)
            pending = []
            rate = done / (time.perf_counter() - started)
            progress(f"distractors {done:,}/{count:,} ({', '.join(m.name for m in missing)}): "
                     f"{rate:.0f}/s, ~{(count - done) / rate:.0f} s left")
    cache_dir.mkdir(parents=True, exist_ok=True)
    for method in missing:
        out[method.name] = np.concatenate(parts[method.name]).astype(np.float32)
        np.save(paths[method.name], out[method.name])
    return out


@dataclass
class QualityResult:
    distractors: int
    photos: list[str]
    per_photo: int
    seed: int
    recall: dict[str, dict[str, dict[int, float]]]  # method -> distortion -> k -> recall
    seconds: dict[str, float]

    def rows(self, k: int) -> list[list[str]]:
        return [[method, *(f"{by[kind][k]:.3f}" for kind in DISTORTIONS)]
                for method, by in self.recall.items()]

    def to_json(self, command: str, methods: Sequence[Method]) -> dict[str, Any]:
        return {
            "bench": "quality", "command": command, "revision": code_revision(),
            "machine": machine_info(["torch", "faiss-cpu", "pillow", "scikit-image", "pinstream"]),
            "params": {"distractors": self.distractors, "photos": self.photos,
                       "queries_per_photo_and_distortion": self.per_photo, "seed": self.seed,
                       "distortions": list(DISTORTIONS),
                       "methods": {m.name: m.key for m in methods}},
            "recall": {method: {kind: {f"@{k}": v for k, v in by_k.items()} for kind, by_k in by.items()}
                       for method, by in self.recall.items()},
            "seconds": self.seconds,
        }


def evaluate(methods: Sequence[Method], distractors: int, per_photo: int, seed: int,
             progress: Progress = lambda _: None, cache_dir: Path = CACHE_DIR) -> QualityResult:
    """Recall@1 and @10 of each method: a query counts as found when its photo's original is
    among the first k results, ignoring distractors cut from that same photo (true duplicates).
    """
    import faiss

    photos = list(available_photos())
    originals = [decode_all([encode_jpeg(load_photo(name))])[0] for name in photos]
    rng = np.random.default_rng(seed)
    queries = {kind: [(p, distort(load_photo(name), kind, rng)) for p, name in enumerate(photos)
                      for _ in range(per_photo)] for kind in DISTORTIONS}
    topics = usable_topics()
    labels = np.array([distractor_label(i, topics) for i in range(distractors)])
    stored = distractor_vectors(methods, distractors, seed, progress, cache_dir)
    recall: dict[str, dict[str, dict[int, float]]] = {}
    seconds: dict[str, float] = {}
    for method in methods:
        progress(f"queries: {method.name}")
        started = time.perf_counter()
        index = faiss.IndexFlatIP(stored[method.name].shape[1])
        index.add(method.featurize(originals))  # ids 0..len(photos)-1 are the originals
        index.add(stored[method.name])
        masked = {name: np.flatnonzero(labels == name) + len(photos) for name in photos}
        depth = min(index.ntotal, 10 + max(len(ids) for ids in masked.values()))
        recall[method.name] = {}
        for kind, pairs in queries.items():
            vectors = method.featurize([image for _, image in pairs])
            _, found = index.search(np.ascontiguousarray(vectors, dtype=np.float32), depth)
            ranks = [_rank(row, target, masked[photos[target]]) for row, (target, _) in zip(found, pairs,
                                                                                           strict=True)]
            recall[method.name][kind] = {k: float(np.mean([r < k for r in ranks])) for k in (1, 10)}
        seconds[method.name] = time.perf_counter() - started
    return QualityResult(distractors, photos, per_photo, seed, recall, seconds)


def _rank(row: np.ndarray[Any, Any], target: int, ignored: np.ndarray[Any, Any]) -> int:
    kept = row[~np.isin(row, ignored)]
    hits = np.flatnonzero(kept == target)
    return int(hits[0]) if hits.size else len(row)


def build_methods(variant: str, threads: int, seed: int, int8: bool,
                  progress: Progress = lambda _: None) -> list[Method]:
    """Our embedder (the configured variant), the same network untrained, optionally int8, and
    the colour histogram.
    """
    from processors.model import Embedder

    progress("loading models")
    ours = Embedder(variant, threads=threads)
    untrained = Embedder("fused", threads=threads, pretrained=False, seed=0)
    methods = [
        Method(f"EfficientNet-Lite0 ImageNet ({variant})", f"{ours.model_id}-{ours.model_version}",
               _in_batches(ours.embed)),
        Method("same network, untrained (seed 0)", f"{untrained.model_id}-{untrained.model_version}",
               _in_batches(untrained.embed)),
    ]
    if int8:
        calibration = decode_all(list(render_distractors(64, seed)))
        quantised = Embedder("int8", threads=threads, calibration=calibration)
        methods.append(Method("EfficientNet-Lite0 int8 (static, FX)",
                              f"{quantised.model_id}-{quantised.model_version}-cal64s{seed}",
                              _in_batches(quantised.embed)))
    methods.append(Method(f"RGB histogram {HISTOGRAM_BINS}x{HISTOGRAM_BINS}x{HISTOGRAM_BINS}",
                          f"rgbhist{HISTOGRAM_BINS}", colour_histogram))
    return methods


def _in_batches(embed: Featurize, size: int = 16) -> Featurize:
    """Embed in batches of `size`: a few hundred queries at once would need gigabytes of activations."""
    def run(images: list[Image.Image]) -> Vectors:
        return np.concatenate([embed(images[i:i + size]) for i in range(0, len(images), size)])

    return run
