"""`pinstream gen pins|interactions`: a deterministic synthetic workload as JSON lines.

The same --seed/--users/--pins/--clusters/--boards-per-user describe the same world in both
commands, so generated interactions reference generated pins.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from streams.errors import ConfigError, PinstreamError
from streams.workload.jsonl import BlobStore, atomic_text, dumps_line, write_truth
from streams.workload.population import World, build_world

DEFAULT_START = "2026-11-20T10:00:00Z"
F = TypeVar("F", bound=Callable[..., Any])


def _world_options(func: F) -> F:
    options = [
        click.option("--seed", type=int, default=42, show_default=True, help="Seed of everything."),
        click.option("--users", type=click.IntRange(min=1), default=200, show_default=True),
        click.option("--pins", type=click.IntRange(min=1), default=2000, show_default=True),
        click.option("--clusters", type=click.IntRange(min=1), default=16, show_default=True,
                     help="Interest clusters, each with its own visual theme and vocabulary."),
        click.option("--boards-per-user", type=click.IntRange(min=1), default=3,
                     show_default=True),
        click.option("--start", default=DEFAULT_START, show_default=True,
                     help="ISO-8601 time: pins are created up to it, interactions follow it."),
        click.option("--out", default="-", show_default=True, help="JSONL file, '-' = stdout."),
        click.option("--truth", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Also write the ground truth (pin clusters, user interests) as JSON."),
        click.option("--quiet", is_flag=True, help="No progress or summary on stderr."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group()
def gen() -> None:
    """Generate a deterministic workload of pins or interactions."""


@gen.command()
@_world_options
@click.option("--blob-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where images go, named <sha256>.jpg [default: settings blob_dir].")
@click.option("--inline", is_flag=True, help="Carry each image as image_base64 in its line.")
@click.option("--window-days", type=click.IntRange(min=1), default=30, show_default=True,
              help="Pins are created over this many days ending at --start.")
@click.option("--jobs", type=click.IntRange(min=1, max=64), default=1, show_default=True,
              help="Processes rendering images (output is the same for any value).")
def pins(seed: int, users: int, pins: int, clusters: int, boards_per_user: int, start: str,
         out: str, truth: Path | None, quiet: bool, blob_dir: Path | None, inline: bool,
         window_days: int, jobs: int) -> None:
    """Pin creations with real images, one JSON object per line."""
    from streams.workload.pins import iter_pin_records

    moment = _parse_start(start)
    target = _check_writable(out, "--out")
    truth_target = _check_writable(str(truth), "--truth") if truth else None
    store = None if inline else _blob_store(blob_dir)
    world = build_world(seed, users, pins, clusters, boards_per_user)
    records = iter_pin_records(
        world, start=moment, window=timedelta(days=window_days), jobs=jobs
    )
    began = time.perf_counter()
    tick = _progress("pins", len(world.pins), quiet)
    try:
        with _output(target) as handle:
            for count, record in enumerate(records, start=1):
                ref = store.put(record.image) if store and record.image is not None else None
                handle.write(dumps_line(record.to_json(image_ref=ref)))
                tick(count)
    except PinstreamError as exc:
        raise click.ClickException(str(exc)) from exc
    _finish(world, truth_target, "pins", len(world.pins), began, quiet)
    if not quiet and store is not None:
        click.echo(f"images in {store.root}", err=True)


@gen.command()
@_world_options
@click.option("--sessions-per-user", type=click.FloatRange(min=0, min_open=True), default=3.0,
              show_default=True, help="Average; each user's count scales with its activity.")
@click.option("--days", type=click.IntRange(min=1), default=7, show_default=True,
              help="Sessions are spread over this many days from --start.")
def interactions(seed: int, users: int, pins: int, clusters: int, boards_per_user: int,
                 start: str, out: str, truth: Path | None, quiet: bool,
                 sessions_per_user: float, days: int) -> None:
    """Interaction sessions over the world's pins, one JSON object per line, by time."""
    from streams.workload.sessions import iter_interactions

    moment = _parse_start(start)
    target = _check_writable(out, "--out")
    truth_target = _check_writable(str(truth), "--truth") if truth else None
    world = build_world(seed, users, pins, clusters, boards_per_user)
    began = time.perf_counter()
    count = 0
    with _output(target) as handle:
        for record in iter_interactions(
            world, start=moment, days=days, sessions_per_user=sessions_per_user
        ):
            handle.write(dumps_line(record.to_json()))
            count += 1
    _finish(world, truth_target, "interactions", count, began, quiet)


def _parse_start(raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise click.BadParameter(f"{raw!r} is not ISO-8601", param_hint="--start") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_writable(out: str, option: str) -> Path | None:
    """Refuse an output that cannot be written before any work is done; None means stdout."""
    if out == "-":
        return None
    path = Path(out)
    folder = path.parent
    if path.is_dir():
        raise click.UsageError(f"{option} {out} is a directory")
    if not folder.is_dir():
        raise click.UsageError(f"{option} {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise click.UsageError(f"{option} {out} is not writable")
    return path


def _blob_store(blob_dir: Path | None) -> BlobStore:
    if blob_dir is None:
        from streams.settings import get_settings

        try:
            blob_dir = get_settings().blob_dir
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
    try:
        blob_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.UsageError(f"--blob-dir {blob_dir}: {exc.strerror}") from None
    if not os.access(blob_dir, os.W_OK):
        raise click.UsageError(f"--blob-dir {blob_dir} is not writable")
    return BlobStore(blob_dir)


@contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        stdout = click.get_text_stream("stdout")
        yield stdout
        stdout.flush()
        return
    with atomic_text(path) as handle:
        yield handle


def _progress(label: str, total: int, quiet: bool) -> Callable[[int], None]:
    """A counter on stderr every ~10% (at least 500 items apart) for runs long enough to watch."""
    began = time.perf_counter()
    step = max(500, total // 10)

    def tick(done: int) -> None:
        if quiet or (done % step and done != total) or total < 500:
            return
        rate = done / max(time.perf_counter() - began, 1e-9)
        click.echo(f"{label}: {done}/{total} ({rate:.0f}/s)", err=True)

    return tick


def _finish(world: World, truth: Path | None, label: str, count: int, began: float,
            quiet: bool) -> None:
    elapsed = time.perf_counter() - began
    if truth is not None:
        write_truth(world, truth)
    if not quiet:
        rate = count / max(elapsed, 1e-9)
        click.echo(f"wrote {count} {label} in {elapsed:.2f} s ({rate:.0f} {label}/s)", err=True)
