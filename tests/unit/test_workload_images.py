"""Pin images: decodable JPEGs of the right size, distinct per pin, deterministic, themed."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image

from streams.workload import drawing
from streams.workload.images import (
    MAX_LONG_SIDE,
    MIN_LONG_SIDE,
    augment,
    available_photos,
    render_base,
    render_pin_image,
)
from streams.workload.pins import iter_pin_records
from streams.workload.population import World, build_world
from streams.workload.records import PinRecord
from streams.workload.themes import TOPICS, Theme

START = datetime(2026, 11, 20, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(21, 40, 200, 16, 2)


@pytest.fixture(scope="module")
def records(world: World) -> list[PinRecord]:
    return list(iter_pin_records(world, start=START))


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_every_theme_photo_loads_offline() -> None:
    photos = {t.source for t in TOPICS if t.kind == "photo"}
    assert set(available_photos()) == photos


def test_images_decode_as_jpeg_of_the_promised_size(records: list[PinRecord]) -> None:
    for record in records:
        assert record.image is not None
        image = _decode(record.image)
        assert image.format == "JPEG" and image.mode == "RGB"
        assert MIN_LONG_SIDE <= max(image.size) <= MAX_LONG_SIDE


def test_two_hundred_pins_have_distinct_images(records: list[PinRecord]) -> None:
    digests = {hashlib.sha256(r.image or b"").hexdigest() for r in records}
    assert len(records) == 200 and len(digests) == 200


def test_same_seed_gives_the_same_image_bytes(world: World, records: list[PinRecord]) -> None:
    again = list(iter_pin_records(build_world(21, 40, 200, 16, 2), start=START))
    assert [r.image for r in again] == [r.image for r in records]


def test_parallel_rendering_gives_the_same_records(world: World, records: list[PinRecord]) -> None:
    assert list(iter_pin_records(world, start=START, jobs=2))[:40] == records[:40]


def test_pins_of_a_cluster_look_alike(world: World, records: list[PinRecord]) -> None:
    # Tiny colour thumbnails already find a same-cluster nearest neighbour for most pins.
    thumbs = np.stack([
        np.asarray(_decode(r.image or b"").convert("RGB").resize((8, 8), Image.Resampling.BOX),
                   dtype=np.float32).ravel()
        for r in records
    ])
    labels = np.array([p.cluster_id for p in world.pins])
    distance = ((thumbs[:, None, :] - thumbs[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(distance, np.inf)
    same = (labels[distance.argmin(axis=1)] == labels).mean()
    assert same > 0.5  # chance is about 1/16


@pytest.mark.parametrize("style", sorted(drawing.STYLES))
def test_every_drawing_style_renders(style: str) -> None:
    theme = Theme("drawing", style, ((10, 20, 30), (200, 100, 0), (0, 150, 250)), (0.5, 0.5), 1.0, 0)
    data = render_pin_image(np.random.default_rng(1), theme)
    assert _decode(data).format == "JPEG"
    assert data != render_pin_image(np.random.default_rng(2), theme)


def test_unknown_drawing_style_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown drawing style"):
        drawing.draw("smudge", np.random.default_rng(0), ((0, 0, 0), (1, 1, 1)), 64, 1.0)


def test_augment_gives_a_different_valid_variant() -> None:
    theme = Theme("photo", "astronaut", ((0, 0, 0),) * 5, (0.5, 0.5), 0.8, 0.0)
    base = render_base(np.random.default_rng(3), theme)
    first = augment(base, np.random.default_rng(4))
    second = augment(base, np.random.default_rng(5))
    assert first.mode == "RGB" and MIN_LONG_SIDE <= max(first.size) <= MAX_LONG_SIDE
    assert np.asarray(first).shape != np.asarray(second).shape or not np.array_equal(
        np.asarray(first), np.asarray(second)
    )
    assert np.array_equal(np.asarray(first), np.asarray(augment(base, np.random.default_rng(4))))
