"""Procedural pin artwork: patterns drawn with numpy and Pillow in a cluster's palette.

Each style keeps a recognisable look per palette while every call lays it out differently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from streams.workload.themes import RGB

FloatGrid = NDArray[np.float32]
Rng = np.random.Generator
Palette = Sequence[RGB]
Style = Callable[[Rng, Palette, int, float], Image.Image]


def draw(style: str, rng: Rng, palette: Palette, size: int, scale: float) -> Image.Image:
    """A `size` x `size` RGB drawing in `style`; `scale` (about 0.5-1.5) sets the motif size."""
    try:
        painter = STYLES[style]
    except KeyError:
        raise ValueError(f"unknown drawing style {style!r}; known: {sorted(STYLES)}") from None
    return painter(rng, palette, size, scale)


def _grid(size: int) -> tuple[FloatGrid, FloatGrid]:
    axis = np.arange(size, dtype=np.float32) / size
    return np.meshgrid(axis, axis, indexing="xy")


def _ramp(t: FloatGrid, colours: Sequence[RGB]) -> Image.Image:
    """Map values in [0, 1] onto a piecewise-linear colour ramp."""
    # A 256-entry lookup table: indexing is far cheaper than interpolating every pixel.
    stops = np.asarray(colours, dtype=np.float32)
    position = np.linspace(0.0, len(stops) - 1, 256, dtype=np.float32)
    low = np.minimum(position.astype(np.int32), len(stops) - 2)
    frac = (position - low)[:, None]
    table = (stops[low] * (1.0 - frac) + stops[low + 1] * frac).astype(np.uint8)
    return Image.fromarray(table[(np.clip(t, 0.0, 1.0) * 255).astype(np.uint8)], mode="RGB")


def _indexed(index: NDArray[np.int64], colours: Sequence[RGB]) -> Image.Image:
    table = np.asarray(colours, dtype=np.uint8)
    return Image.fromarray(table[index % len(table)], mode="RGB")


def _pick(rng: np.random.Generator, palette: Sequence[RGB], count: int) -> list[RGB]:
    order = rng.permutation(len(palette))[:count]
    return [palette[int(i)] for i in order]


def _direction(rng: np.random.Generator, size: int) -> tuple[FloatGrid, FloatGrid]:
    x, y = _grid(size)
    angle = rng.uniform(0.0, np.pi)
    along = x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))
    across = -x * np.float32(np.sin(angle)) + y * np.float32(np.cos(angle))
    return along, across


def _gradient(rng: Rng, palette: Palette, size: int, scale: float) -> Image.Image:
    x, y = _grid(size)
    tilt = rng.uniform(-0.3, 0.3)
    image = _ramp(y + tilt * (x - 0.5), _pick(rng, palette, 3))
    # A soft sun over the horizon gives the sunset look its focal point.
    cx, cy, radius = rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.7), 0.08 + 0.08 * scale
    glow = np.clip(1.0 - np.hypot(x - cx, y - cy) / radius, 0.0, 1.0) ** 0.5
    sun = np.asarray(palette[-1], dtype=np.float32)
    pixels = np.asarray(image, dtype=np.float32) * (1 - glow[..., None]) + sun * glow[..., None]
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


def _stripes(rng: Rng, palette: Palette, size: int, scale: float) -> Image.Image:
    along, _ = _direction(rng, size)
    width = rng.uniform(0.03, 0.08) * scale
    return _indexed(np.floor(along / width).astype(np.int64), _pick(rng, palette, 3))


def _checker(rng: Rng, palette: Palette, size: int, scale: float) -> Image.Image:
    along, across = _direction(rng, size)
    cell = rng.uniform(0.06, 0.14) * scale
    parity = np.floor(along / cell).astype(np.int64) + np.floor(across / cell).astype(np.int64)
    return _indexed(parity, _pick(rng, palette, 2))


def _waves(rng: Rng, palette: Palette, size: int, scale: float) -> Image.Image:
    x, y = _grid(size)
    frequency = rng.uniform(2.0, 4.5) / scale
    amplitude = rng.uniform(0.03, 0.08)
    phase = rng.uniform(0.0, 2 * np.pi)
    band = y + amplitude * np.sin(2 * np.pi * frequency * x + phase)
    return _indexed(np.floor(band * rng.uniform(6, 12)).astype(np.int64), _pick(rng, palette, 4))


def _marble(rng: Rng, palette: Palette, size: int, scale: float) -> Image.Image:
    coarse = rng.random((6, 6), dtype=np.float32)
    smooth = Image.fromarray((coarse * 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    noise = np.asarray(smooth, dtype=np.float32) / 255.0
    along, _ = _direction(rng, size)
    veins = 0.5 + 0.5 * np.sin(2 * np.pi * (along * 3.0 / scale + noise * rng.uniform(2.0, 4.0)))
    return _ramp((veins**3).astype(np.float32), _pick(rng, palette, 3))


def _mosaic(rng: Rng, palette: Palette, size: int, scale: float) -> Image.Image:
    # Voronoi cells on a coarse grid, upscaled: exact tiles are not needed, only the look.
    coarse = 128
    x, y = _grid(coarse)
    seeds = rng.random((int(40 / scale) + 8, 2), dtype=np.float32)
    distance = (x[..., None] - seeds[:, 0]) ** 2 + (y[..., None] - seeds[:, 1]) ** 2
    nearest = np.sort(distance, axis=-1)
    tiles = np.argmin(distance, axis=-1).astype(np.int64)
    table = np.asarray(palette, dtype=np.uint8)[rng.integers(0, len(palette), len(seeds))]
    pixels = table[tiles]
    grout = (np.sqrt(nearest[..., 1]) - np.sqrt(nearest[..., 0])) < 0.012
    pixels[grout] = (40, 40, 40)
    return Image.fromarray(pixels, mode="RGB").resize((size, size), Image.Resampling.NEAREST)


def _dots(rng: Rng, palette: Palette, size: int, scale: float) -> Image.Image:
    background, *inks = _pick(rng, palette, 3)
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    spacing = size * rng.uniform(0.09, 0.15) * scale
    radius = spacing * rng.uniform(0.22, 0.35)
    offset = rng.uniform(0.0, spacing)
    rows = int(size / spacing) + 2
    for row in range(rows):
        for col in range(rows):
            cx = offset + col * spacing + (spacing / 2 if row % 2 else 0.0) - spacing
            cy = offset + row * spacing - spacing
            ink = inks[(row + col) % len(inks)]
            pen.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=ink)
    return image


def _geometric(rng: Rng, palette: Palette, size: int, scale: float) -> Image.Image:
    background, *inks = _pick(rng, palette, len(palette))
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(5, 12))):
        cx, cy = rng.uniform(0, size, 2)
        half = size * rng.uniform(0.06, 0.22) * scale
        ink = inks[int(rng.integers(0, len(inks)))]
        shape = int(rng.integers(0, 3))
        if shape == 0:
            bottom = cy + half * rng.uniform(0.5, 1.5)
            pen.rectangle((cx - half, cy - half, cx + half, bottom), fill=ink)
        elif shape == 1:
            pen.ellipse((cx - half, cy - half, cx + half, cy + half), fill=ink)
        else:
            pen.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=ink)
    return image


STYLES: dict[str, Style] = {
    "geometric": _geometric,
    "gradient": _gradient,
    "stripes": _stripes,
    "dots": _dots,
    "waves": _waves,
    "mosaic": _mosaic,
    "marble": _marble,
    "checker": _checker,
}
