"""`pinstream bench ...`: each subcommand prints our figure beside the bare library's ceiling and
writes the run as JSON under `bench/results/`. Bench modules are imported inside each command, so
one bench's dependencies never slow down or break another."""

from __future__ import annotations

from pathlib import Path

import click

from streams.cli.common import console, reports_errors


@click.group()
def bench() -> None:
    """Benchmarks: our figure beside the bare-library ceiling, medians of repeated runs."""


@bench.command("codec")
@click.option("--events", type=click.IntRange(min=100), default=20_000, show_default=True,
              help="Events per repetition (90% interactions, 5% pins with 2 KB images, 5% embeddings).")
@click.option("--repeat", type=click.IntRange(min=1), default=7, show_default=True,
              help="Measured repetitions (after one warm-up); figures are their medians.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the workload.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON result file  [default: bench/results/codec-<date>.json]")
@reports_errors
def codec(events: int, repeat: int, seed: int, out: Path | None) -> None:
    """Encode+decode events/s: AvroCodec (dicts, dataclasses) vs raw fastavro, same records."""
    from streams.bench.codec import GOAL_RATIO, OURS, PATHS, RAW, TYPED, run_codec_bench
    from streams.bench.report import default_result_path, fmt_rate, print_table, ratio, write_json

    screen = console()
    with screen.status("measuring...") as status:
        result = run_codec_bench(
            events, repeat, seed,
            progress=lambda rep: status.update(f"repetition {rep}/{repeat} done" if rep else "warmed up"),
        )
    command = f"pinstream bench codec --events {events} --repeat {repeat} --seed {seed}"
    print_table(
        screen,
        f"Codec, single-object framing: median of {repeat} runs x {events:,} events",
        ["path", "encode+decode ev/s", "encode ev/s", "decode ev/s", "vs raw"],
        [
            [path, fmt_rate(result.total[path].median), fmt_rate(result.encode[path].median),
             fmt_rate(result.decode[path].median), f"{result.ratio(path):.2f}"]
            for path in PATHS
        ],
        caption=f"{command}\n\"vs raw\" = median over repetitions of ours / raw measured side by side",
    )
    print_table(
        screen,
        "By contract: encode+decode ev/s (median)",
        ["contract", "events", "wire bytes", "raw fastavro", "dicts", "vs raw", "dataclasses", "vs raw"],
        [
            [kind, f"{result.counts[kind]:,}", f"{result.mean_bytes[kind]:,.0f}",
             fmt_rate(series[RAW].median), fmt_rate(series[OURS].median),
             f"{ratio(series[OURS], series[RAW]):.2f}", fmt_rate(series[TYPED].median),
             f"{ratio(series[TYPED], series[RAW]):.2f}"]
            for kind, series in result.by_contract.items()
        ],
    )
    verdict = "meets" if result.ratio(OURS) >= GOAL_RATIO else "BELOW"
    screen.print(f"dicts vs raw fastavro: {result.ratio(OURS):.2f} ({verdict} the {GOAL_RATIO} goal); "
                 f"dataclasses vs raw: {result.ratio(TYPED):.2f}")
    path = write_json(out or default_result_path("codec"), result.to_json(command))
    screen.print(f"wrote {path}")
