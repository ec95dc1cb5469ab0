"""`pinstream fuzz`: the bad-input campaign (hypothesis) over every decoder, the JSONL reader, the
image loader and the dead-letter routing; JSON under bench/results/, exit code 1 on any crash."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.table import Table

from streams.cli.common import console, err, reports_errors


@click.command()
@click.option("--examples", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Generated inputs per target.")
@click.option("--seconds", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Time budget for the whole campaign, shared equally by the targets.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="JSON result file  [default: bench/results/fuzz-<date>.json]")
@reports_errors
def fuzz(examples: int, seconds: float, out: Path | None) -> None:
    """Feed malformed Avro (both framings, every contract), wrong schemas, unknown enum symbols,
    oversized length prefixes, truncated frames, hostile JSONL files, broken images and image
    bombs to the code that reads them. Every input must be accepted or rejected with a typed
    error and a reason; anything else counts as a crash (exit code 1)."""
    from streams.bench.report import code_revision, default_result_path, machine_info, write_json
    from streams.campaigns.fuzz import run_campaign

    started = time.monotonic()
    results = run_campaign(examples=examples, seconds=seconds, progress=err)
    elapsed = time.monotonic() - started
    table = Table("target", "examples", "accepted", "rejected (top reasons)", "crashes")
    for result in results:
        top = ", ".join(f"{reason} {n}" for reason, n in result.rejected.most_common(4))
        table.add_row(result.name, str(result.examples), str(result.accepted), top, str(result.crashes))
    screen = console()
    screen.print(table)
    crashes = sum(r.crashes for r in results)
    total = sum(r.examples for r in results)
    for result in results:
        for example in result.crash_examples:
            screen.print(f"CRASH {result.name}: {example}")
    path = write_json(out or default_result_path("fuzz"), {
        "campaign": "bad-input", "command": " ".join(["pinstream", *sys.argv[1:]]),
        "revision": code_revision(), "examples_per_target": examples, "seconds": round(elapsed, 1),
        "examples": total, "crashes": crashes, "targets": [r.to_json() for r in results],
        "machine": machine_info(["hypothesis", "fastavro", "pillow"]),
    })
    screen.print(f"{total} inputs in {elapsed:.0f} s, {crashes} crashes; written to {path}")
    if crashes:
        sys.exit(1)
