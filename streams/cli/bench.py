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


@bench.command("roundtrip")
@click.option("--events", type=click.IntRange(min=100), default=50_000, show_default=True,
              help="PinInteraction events per path and repetition.")
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True,
              help="Measured repetitions (after one warm-up); figures are their medians.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the workload.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON result file  [default: bench/results/roundtrip-<date>.json]")
@reports_errors
def roundtrip(events: int, repeat: int, seed: int, out: Path | None) -> None:
    """Produce+consume events/s through the local broker: our SDK vs a bare confluent-kafka loop."""
    from streams.bench.report import default_result_path, fmt_rate, print_table, write_json
    from streams.bench.roundtrip import BARE, GOAL_RATIO, OURS_RAW, PATHS, run_roundtrip_bench
    from streams.cli.common import settings_or_exit

    settings = settings_or_exit()
    screen = console()
    with screen.status("measuring...") as status:
        result = run_roundtrip_bench(
            settings, events, repeat, seed,
            progress=lambda rep: status.update(f"repetition {rep}/{repeat} done" if rep else "warmed up"))
    command = f"pinstream bench roundtrip --events {events} --repeat {repeat} --seed {seed}"
    print_table(
        screen,
        f"Kafka round trip: median of {repeat} runs x {events:,} events, {settings.bootstrap_servers}",
        ["path", "produce+consume ev/s", "produce ev/s", "consume ev/s", "vs bare"],
        [[p, fmt_rate(result.total(p).median), fmt_rate(result.phase(p, "produce").median),
          fmt_rate(result.phase(p, "consume").median), f"{result.ratio(p):.2f}"] for p in PATHS],
        caption=f"{command}\n\"vs bare\" = median over repetitions of ours / bare, measured in the same run",
    )
    verdict = "meets" if result.ratio(OURS_RAW) >= GOAL_RATIO else "BELOW"
    screen.print(f"{OURS_RAW} vs {BARE}: {result.ratio(OURS_RAW):.2f} ({verdict} the {GOAL_RATIO} goal)")
    path = write_json(out or default_result_path("roundtrip"), result.to_json(command))
    screen.print(f"wrote {path}")



@bench.command("embed")
@click.option("--images", type=click.IntRange(min=8), default=128, show_default=True,
              help="Generated pin images (JPEG) per pass.")
@click.option("--batch", type=click.IntRange(1, 256), default=None,
              help="Batch size for every path  [default: settings embed_max_batch]")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch threads; 0 = every usable core.")
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True,
              help="Measured repetitions (after a warm-up); figures are their medians.")
@click.option("--variants", default="eager,channels_last,fused,jit,compile,int8", show_default=True,
              help="Inference variants to compare (comma-separated).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON result file  [default: bench/results/embed-<date>.json]")
@reports_errors
def embed(images: int, batch: int | None, threads: int, repeat: int, variants: str,
          out: Path | None) -> None:
    """Images/s: the embedding processor path vs bare torch loops; variants; FLOP limit."""
    from streams.bench.embed import VARIANTS, run_embed_bench
    from streams.bench.report import default_result_path, print_table, write_json
    from streams.cli.common import settings_or_exit

    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        raise click.BadParameter(f"unknown variants {unknown}; choose from {VARIANTS}",
                                 param_hint="--variants")
    settings = settings_or_exit()
    batch = batch or settings.embed_max_batch
    screen = console()
    with screen.status("measuring...") as status:
        result = run_embed_bench(settings, images, batch, threads, repeat, chosen, status.update)
    command = (f"pinstream bench embed --images {images} --batch {batch} --threads {threads} "
               f"--repeat {repeat} --variants {','.join(chosen)}")
    print_table(screen, f"Embedding ({result.variant}, batch {batch}, {result.threads} threads): "
                f"median of {repeat} runs x {images} images",
                ["path", "img/s", "vs bare e2e", "vs bare model"], result.path_rows(), caption=command)
    screen.print(result.ceiling_line())
    print_table(screen, f"Inference variants, batch {batch} (model alone on preprocessed tensors)",
                ["variant", "build s", "img/s", "ms/img p50", "ms/img p95", "cos min", "vs eager"],
                result.variant_rows())
    print_table(screen, "Batch size sweep (img/s, model alone)", ["batch", *result.sweep],
                result.sweep_rows())
    screen.print(result.verdict_line())
    path = write_json(out or default_result_path("embed"), result.to_json(command))
    screen.print(f"wrote {path}")
