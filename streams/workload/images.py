"""Pin images: scikit-image's bundled photos or procedural drawings, framed by a cluster's theme
and made distinct per pin by augmentations (also reused to distort visual-search queries).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from streams.errors import ConfigError
from streams.workload import drawing
from streams.workload.themes import TOPICS, Theme

JPEG_QUALITY = 85
MIN_LONG_SIDE = 256
MAX_LONG_SIDE = 512
# Photos are shrunk once on load: every pin crops at most this much, so larger sources only
# cost time.
_PHOTO_MAX_SIDE = 768
_DRAWING_SIZE = 512
_SUPERSAMPLE = 2

# Photos whose scikit-image loader name differs from the theme's source name.
_PHOTO_LOADERS: dict[str, Callable[[Any], Any]] = {
    "motorcycle": lambda data: data.stereo_motorcycle()[0],
}


@cache
def load_photo(name: str) -> Image.Image:
    """A bundled scikit-image sample photo as RGB, long side at most 768 px. Do not mutate it."""
    try:
        from skimage import data
    except ImportError as exc:
        raise ConfigError(
            "photo pins need scikit-image: pip install 'pinstream[gen]'"
        ) from exc
    loader = _PHOTO_LOADERS.get(name)
    if loader is None and not hasattr(data, name):
        raise ConfigError(f"scikit-image has no sample image {name!r}")
    try:
        array = np.asarray(loader(data) if loader else getattr(data, name)())
    except (ImportError, OSError, ValueError) as exc:  # not bundled: needs pooch or a network
        raise ConfigError(
            f"scikit-image sample {name!r} is not available offline ({exc.__class__.__name__})"
        ) from exc
    image = _to_rgb(array)
    if max(image.size) > _PHOTO_MAX_SIDE:
        ratio = _PHOTO_MAX_SIDE / max(image.size)
        size = (round(image.width * ratio), round(image.height * ratio))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def available_photos() -> tuple[str, ...]:
    """The themes' photos that load on this machine without a network."""
    names = []
    for topic in TOPICS:
        if topic.kind != "photo":
            continue
        try:
            load_photo(topic.source)
        except ConfigError:
            continue
        names.append(topic.source)
    return tuple(names)


def _to_rgb(array: np.ndarray[Any, Any]) -> Image.Image:
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    if array.ndim == 2:
        return Image.fromarray(array, mode="L").convert("RGB")
    if array.shape[2] == 4:
        rgba = Image.fromarray(array, mode="RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return Image.fromarray(array[..., :3], mode="RGB")


def render_base(rng: np.random.Generator, theme: Theme) -> Image.Image:
    """The theme's look before per-pin augmentation: a framed, tinted photo or a fresh drawing."""
    if theme.kind == "drawing":
        return drawing.draw(theme.source, rng, theme.palette, _DRAWING_SIZE, theme.zoom)
    photo = load_photo(theme.source)
    side = theme.zoom * min(photo.size)
    cx = (theme.focus[0] + rng.normal(0.0, 0.04)) * photo.width
    cy = (theme.focus[1] + rng.normal(0.0, 0.04)) * photo.height
    left = float(np.clip(cx - side / 2, 0, photo.width - side))
    top = float(np.clip(cy - side / 2, 0, photo.height - side))
    framed = photo.crop((round(left), round(top), round(left + side), round(top + side)))
    return _tint(framed, theme) if theme.tint > 0 else framed


def _tint(image: Image.Image, theme: Theme) -> Image.Image:
    """Blend the photo with a duotone of its luminance in the palette's dark-to-light colours."""
    stops = np.asarray(sorted(theme.palette, key=sum), dtype=np.float32)[[0, 2, -1]]
    luminance = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    position = luminance * 2.0
    low = np.minimum(position.astype(np.int32), 1)
    frac = (position - low)[..., None]
    duotone = stops[low] * (1.0 - frac) + stops[low + 1] * frac
    original = np.asarray(image, dtype=np.float32)
    mixed = original * (1.0 - theme.tint) + duotone * theme.tint
    return Image.fromarray(mixed.astype(np.uint8), mode="RGB")


def augment(
    image: Image.Image, rng: np.random.Generator, *, recompress: bool = True
) -> Image.Image:
    """A distinct variant of `image`: random crop, flip, rescale to a 256-512 px long side, small
    rotation, colour jitter and (with `recompress`) a JPEG round trip at quality 50-95.
    """
    image = _random_crop(image.convert("RGB"), rng)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    degrees = float(rng.uniform(-10.0, 10.0)) if rng.random() < 0.7 else 0.0
    long_side = int(rng.integers(MIN_LONG_SIDE, MAX_LONG_SIDE + 1))
    image = _rotate_and_scale(image, degrees, long_side)
    image = _jitter_colour(image, rng)
    if recompress:
        quality = int(rng.integers(50, 96))
        image = Image.open(io.BytesIO(encode_jpeg(image, quality))).convert("RGB")
    return image


def _rotate_and_scale(image: Image.Image, degrees: float, long_side: int) -> Image.Image:
    """Rotate by `degrees`, keep the largest centred box of the same shape free of blank corners,
    and scale it to `long_side`: one affine resampling instead of a resize, a rotate and a crop.
    """
    w, h = image.size
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    inside = min(w / (w * abs(cos) + h * abs(sin)), h / (w * abs(sin) + h * abs(cos)))
    out_w, out_h = (
        (long_side, max(1, round(long_side * h / w)))
        if w >= h
        else (max(1, round(long_side * w / h)), long_side)
    )
    # Nearest-neighbour sampling on a 2x grid, then a 2x2 box average: antialiased, and several
    # times faster than Pillow's bilinear affine.
    step = inside * w / out_w / _SUPERSAMPLE  # source pixels per supersampled pixel
    factor = int(step / 1.25)
    if factor >= 2:  # larger steps skip source pixels: box-reduce the source first
        image = image.reduce(factor)
        step, w, h = step / factor, image.width, image.height
    grid_w, grid_h = out_w * _SUPERSAMPLE, out_h * _SUPERSAMPLE
    # Grid pixel (x, y) samples the source at centre + R(theta) . ((x, y) - grid centre) * step.
    a, b, d, e = step * cos, -step * sin, step * sin, step * cos
    c = w / 2 - a * grid_w / 2 - b * grid_h / 2
    f = h / 2 - d * grid_w / 2 - e * grid_h / 2
    grid = image.transform(
        (grid_w, grid_h), Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.NEAREST
    )
    return grid.reduce(_SUPERSAMPLE)


def _jitter_colour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    brightness = float(rng.uniform(0.8, 1.2))
    contrast = float(rng.uniform(0.8, 1.2))
    saturation = float(rng.uniform(0.75, 1.25))
    # Brightness and contrast in one lookup table: one pass over the pixels instead of two blends.
    grey = image.convert("L").histogram()
    mean = sum(level * count for level, count in enumerate(grey)) / max(1, sum(grey))
    levels = np.arange(256, dtype=np.float32)
    table = np.clip((levels * brightness - mean) * contrast + mean, 0, 255).astype(np.uint8)
    image = image.point(table.tolist() * 3)
    return ImageEnhance.Color(image).enhance(saturation)


def _random_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    area = rng.uniform(0.55, 1.0) * w * h
    # Log-uniform aspect between 2:3 (portrait, the common pin shape) and 4:3.
    aspect = math.exp(rng.uniform(math.log(2 / 3), math.log(4 / 3)))
    crop_w = min(w, math.sqrt(area * aspect))
    crop_h = min(h, math.sqrt(area / aspect))
    left = rng.uniform(0.0, w - crop_w)
    top = rng.uniform(0.0, h - crop_h)
    return image.crop((round(left), round(top), round(left + crop_w), round(top + crop_h)))


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """Baseline JPEG bytes; the same pixels and quality always give the same bytes."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=False)
    return buffer.getvalue()


def render_pin_image(rng: np.random.Generator, theme: Theme) -> bytes:
    """The JPEG bytes (quality 85, long side 256-512 px) of one pin of this theme."""
    return encode_jpeg(augment(render_base(rng, theme), rng, recompress=False), JPEG_QUALITY)
