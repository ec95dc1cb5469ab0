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
@click.option("--engine", type=click.Choice(["hypothesis", "atheris", "both"]), default="hypothesis",
              show_default=True, help="atheris: coverage-guided runs of the byte-reading targets "
              "(the `dev` extra); both: hypothesis, then atheris, each with --seconds.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="JSON result file  [default: bench/results/fuzz-<date>.json]")
@reports_errors
def fuzz(examples: int, seconds: float, engine: str, out: Path | None) -> None:
    """Feed malformed Avro (both framings, every contract), wrong schemas, unknown enum symbols,
    oversized length prefixes, truncated frames, hostile JSONL files, broken images and image
    bombs to the code that reads them. Every input must be accepted or rejected with a typed
    error and a reason; anything else counts as a crash (exit code 1)."""
    from streams.bench.report import code_revision, default_result_path, machine_info, write_json
    from streams.campaigns.fuzz import run_campaign

    started = time.monotonic()
    results = run_campaign(examples=examples, seconds=seconds, progress=err) \
        if engine != "atheris" else []
    elapsed = time.monotonic() - started
    coverage = []
    if engine != "hypothesis":
        from streams.campaigns.coverage import run_coverage

        path = out or default_result_path("fuzz")
        coverage = run_coverage(seconds, err, path.parent / f"{path.stem}-crashes")
    table = Table("target", "examples", "accepted", "rejected (top reasons)", "crashes")
    for result in results:
        top = ", ".join(f"{reason} {n}" for reason, n in result.rejected.most_common(4))
        table.add_row(result.name, str(result.examples), str(result.accepted), top, str(result.crashes))
    screen = console()
    if results:
        screen.print(table)
    crashes = sum(r.crashes for r in results) + sum(run.crashed for run in coverage)
    for run in coverage:
        screen.print(f"atheris {run.target}: {run.runs} runs, coverage {run.coverage} edges, "
                     f"{'CRASHED: ' + ', '.join(run.crash_files) if run.crashed else 'no crash'}")
    total = sum(r.examples for r in results)
    for result in results:
        for example in result.crash_examples:
            screen.print(f"CRASH {result.name}: {example}")
    path = write_json(out or default_result_path("fuzz"), {
        "campaign": "bad-input", "command": " ".join(["pinstream", *sys.argv[1:]]),
        "revision": code_revision(), "examples_per_target": examples, "seconds": round(elapsed, 1),
        "examples": total, "crashes": crashes, "targets": [r.to_json() for r in results],
        "atheris": [run.to_json() for run in coverage],
        "machine": machine_info(["hypothesis", "atheris", "fastavro", "pillow"]),
    })
    runs = sum(run.runs for run in coverage)
    screen.print(f"{total} hypothesis inputs in {elapsed:.0f} s, {runs} atheris runs, {crashes} crashes; "
                 f"written to {path}")
    if crashes:
        sys.exit(1)
