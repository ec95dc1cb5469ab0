"""Pin-creation records of a world: text from the cluster's vocabulary, an image from its theme.

Each pin draws from its own seed, so records are identical whatever order or process renders them.
"""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np

from streams.workload.population import Cluster, Pin, World
from streams.workload.records import PinRecord, epoch_ms, event_uuid
from streams.workload.themes import FILLER_WORDS, Theme

DEFAULT_WINDOW = timedelta(days=30)
# Share of description words taken from the cluster's vocabulary (the rest are filler).
_TOPICAL_SHARE = 0.6
_LINK_SHARE = 0.6


def iter_pin_records(
    world: World,
    *,
    start: datetime,
    window: timedelta = DEFAULT_WINDOW,
    with_images: bool = True,
    jobs: int = 1,
) -> Iterator[PinRecord]:
    """Every pin of `world` in pin-id order, created over `window` up to `start`.

    `jobs` > 1 renders images in that many processes; the records are the same either way.
    """
    if jobs <= 1 or not with_images:
        for pin in world.pins:
            yield pin_record(world, pin, start=start, window=window, with_image=with_images)
        return
    from streams.workload.images import load_photo

    # Loaded before the pool forks, so workers share these photos instead of each decoding them.
    for cluster in world.clusters:
        if cluster.theme.kind == "photo":
            load_photo(cluster.theme.source)
    tasks = ((pin.seed, world.clusters[pin.cluster_id].theme) for pin in world.pins)
    with multiprocessing.Pool(jobs) as pool:
        images = pool.imap(_render, tasks, chunksize=8)
        for pin, image in zip(world.pins, images, strict=True):
            text_only = pin_record(world, pin, start=start, window=window, with_image=False)
            yield replace(text_only, image=image)


def pin_record(
    world: World,
    pin: Pin,
    *,
    start: datetime,
    window: timedelta = DEFAULT_WINDOW,
    with_image: bool = True,
) -> PinRecord:
    """The creation record of one pin."""
    rng = random.Random(pin.seed)
    cluster = world.clusters[pin.cluster_id]
    # Creation times rise with the pin number, jittered within the pin's slot of the window.
    slot_ms = window / timedelta(milliseconds=1) / len(world.pins)
    created = epoch_ms(start - window) + int((pin.index + rng.random()) * slot_ms)
    title = make_title(rng, cluster)
    return PinRecord(
        event_id=event_uuid(rng),
        event_time_ms=created,
        pin_id=pin.pin_id,
        user_id=pin.creator_id,
        board_id=pin.board_id,
        title=title,
        description=make_description(rng, cluster),
        link=make_link(rng, title, pin),
        tags=make_tags(rng, cluster),
        image=_render((pin.seed, cluster.theme)) if with_image else None,
    )


def make_title(rng: random.Random, cluster: Cluster) -> str:
    words = rng.sample(cluster.vocabulary, rng.randint(2, 3))
    if rng.random() < 0.4:
        words.append(rng.choice(("ideas", "inspiration", "aesthetic", "love", "style")))
    return " ".join(words).capitalize()


def make_description(rng: random.Random, cluster: Cluster) -> str:
    words = [
        rng.choice(cluster.vocabulary if rng.random() < _TOPICAL_SHARE else FILLER_WORDS)
        for _ in range(rng.randint(8, 24))
    ]
    return " ".join(words).capitalize() + "."


def make_tags(rng: random.Random, cluster: Cluster) -> tuple[str, ...]:
    return tuple(rng.sample(cluster.vocabulary, rng.randint(2, 5)))


def make_link(rng: random.Random, title: str, pin: Pin) -> str | None:
    if rng.random() >= _LINK_SHARE:
        return None
    slug = "-".join(title.lower().split())
    return f"https://example.com/{slug}-{pin.index + 1}"


def _render(task: tuple[int, Theme]) -> bytes:
    # Imported here: text-only records must not pay for (or need) the image libraries.
    from streams.workload.images import render_pin_image

    seed, theme = task
    return render_pin_image(np.random.default_rng(seed), theme)

