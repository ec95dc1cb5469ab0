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
    from streams.bench.roundtrip import (
        BARE,
        BARE_DECODED,
        GOAL_RATIO,
        OURS_RAW,
        PATHS,
        run_roundtrip_bench,
    )
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
        ["path", "produce+consume ev/s", "produce ev/s", "consume ev/s", "vs bare", "vs bare+decode"],
        [[p, fmt_rate(result.total(p).median), fmt_rate(result.phase(p, "produce").median),
          fmt_rate(result.phase(p, "consume").median), f"{result.ratio(p):.2f}",
          f"{result.ratio(p, BARE_DECODED):.2f}"] for p in PATHS],
        caption=f"{command}\n\"vs bare\" = median over repetitions of ours / bare, measured in the same run",
    )
    for ceiling in (BARE, BARE_DECODED):
        value = result.ratio(OURS_RAW, ceiling)
        verdict = "meets" if value >= GOAL_RATIO else "BELOW"
        screen.print(f"{OURS_RAW} vs {ceiling}: {value:.2f} ({verdict} the {GOAL_RATIO} goal)")
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


@bench.command("search")
@click.option("--sizes", default="100000", show_default=True,
              help="Collection sizes, comma-separated; 1M as well: --sizes 100000,1000000.")
@click.option("--queries", type=click.IntRange(min=10), default=500, show_default=True,
              help="Query vectors (held apart from the collection).")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed passes over the queries; latencies are medians over passes.")
@click.option("--nprobe", type=click.IntRange(min=1), default=32, show_default=True,
              help="IVF lists scanned per query by our VectorIndex.")
@click.option("--candidates", default=None,
              help="Comma-separated index types (flat, ivf_sq8, ivfpq_refine, hnsw_sq8, pca_hnsw); "
                   "default: all, the HNSW ones only up to 200k vectors (slow builds).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="faiss OpenMP threads.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON result file  [default: bench/results/search-<date>.json]")
@reports_errors
def search(sizes: str, queries: int, repeat: int, nprobe: int, candidates: str | None,
           threads: int, out: Path | None) -> None:
    """ANN recall@10 vs exact search, p50/p99 per query, memory and build time per index type."""
    import os
    import time

    from streams.bench.report import default_result_path, print_table, write_json
    from streams.bench.search import (
        CANDIDATES,
        END_TO_END,
        TABLE_COLUMNS,
        real_embedding_files,
        run_search_bench,
        table_rows,
        to_json,
    )
    from streams.cli.common import err

    try:
        size_list = [int(part.replace("_", "")) for part in sizes.split(",") if part.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"{sizes!r}: expected integers separated by commas") from exc
    chosen = [c.strip() for c in candidates.split(",")] if candidates else None
    unknown = sorted(set(chosen or ()) - set(CANDIDATES))
    if unknown:
        raise click.BadParameter(f"unknown candidates {unknown}; choose from {sorted(CANDIDATES)}")
    screen = console()
    last_line = [0.0]

    with screen.status("measuring...") as status:
        def progress(message: str) -> None:
            status.update(message)
            # piped output shows no spinner: a line every 15 s tells long builds are moving
            if not screen.is_terminal and time.monotonic() - last_line[0] > 15:
                last_line[0] = time.monotonic()
                err(f"[bench search] {message}")

        results = run_search_bench(size_list, queries=queries, repeat=repeat, candidates=chosen,
                                   nprobe=nprobe, threads=threads, real_files=real_embedding_files(),
                                   progress=progress)
    command = (f"pinstream bench search --sizes {sizes} --queries {queries} --repeat {repeat} "
               f"--nprobe {nprobe} --threads {threads}")
    if candidates:
        command += f" --candidates {candidates}"
    for result in results:
        load = ", ".join(f"{v:.1f}" for v in result.load_before)
        print_table(screen, f"{result.size:,} vectors ({result.dataset.split(':')[0]}), "
                            f"{result.queries} queries, k=10, load average before: {load}",
                    TABLE_COLUMNS, table_rows(result), caption=command)
    screen.print(f"end-to-end visual search (decode, embedding, ANN, metadata): {END_TO_END}")
    params = {"sizes": size_list, "queries": queries, "repeat": repeat, "nprobe": nprobe,
              "threads": threads, "candidates": chosen, "cpu_count": os.cpu_count()}
    path = write_json(out or default_result_path("search"), to_json(results, command, params))
    screen.print(f"wrote {path}")


@bench.command("quality")
@click.option("--distractors", type=click.IntRange(min=0), default=10_000, show_default=True,
              help="Generated distractor pins (their vectors are cached under bench/cache/).")
@click.option("--per-photo", type=click.IntRange(min=1), default=5, show_default=True,
              help="Queries per photo and distortion.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of distractors and queries.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch threads; 0 = every usable core.")
@click.option("--int8/--no-int8", default=True, show_default=True,
              help="Also evaluate the int8-quantised network.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON result file  [default: bench/results/quality-<date>.json]")
@reports_errors
def quality(distractors: int, per_photo: int, seed: int, threads: int, int8: bool,
            out: Path | None) -> None:
    """Near-duplicate recall@1/@10: our embedder vs an untrained network vs a colour histogram."""
    from streams.bench.quality import DISTORTIONS, build_methods, evaluate
    from streams.bench.report import default_result_path, print_table, write_json
    from streams.cli.common import settings_or_exit

    settings = settings_or_exit()
    screen = console()
    with screen.status("preparing...") as status:
        methods = build_methods(settings.embed_optimisation, threads, seed, int8, status.update)
        result = evaluate(methods, distractors, per_photo, seed, status.update)
    command = (f"pinstream bench quality --distractors {distractors} --per-photo {per_photo} "
               f"--seed {seed}{'' if int8 else ' --no-int8'}")
    for k in (1, 10):
        print_table(screen, f"Recall@{k}: {len(result.photos)} photos x {per_photo} queries per "
                    f"distortion among {distractors:,} distractors", ["method", *DISTORTIONS],
                    result.rows(k), caption=command if k == 10 else None)
    path = write_json(out or default_result_path("quality"), result.to_json(command, methods))
    screen.print(f"wrote {path}")


@bench.command("pins")
@click.option("--rate", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Pins published per second (open loop).")
@click.option("--duration", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds of publishing.")
@click.option("--searches", type=click.IntRange(min=2), default=101, show_default=True,
              help="Visual searches of augmented copies afterwards (the first is a warm-up).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("bench/cache/pins"),
              show_default=True, help="Blobs, index snapshot and worker log of the bench's worker.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON result file  [default: bench/results/pins-<date>.json]")
@reports_errors
def pins(rate: float, duration: float, searches: int, seed: int, workdir: Path, out: Path | None) -> None:
    """Publish -> searchable p50/p99 through a real worker at a sustained rate; then visual search."""
    from streams.bench.pins import GOAL_P99_S, SEARCH_GOAL_P95_S, run_pins_bench
    from streams.bench.report import default_result_path, print_table, write_json

    screen = console()
    with screen.status("preparing...") as status:
        result = run_pins_bench(workdir, rate=rate, duration_s=duration, searches=searches, seed=seed,
                                progress=status.update)
    command = f"pinstream bench pins --rate {rate:g} --duration {duration:g} --searches {searches}"
    latency = result.summary(result.latencies_s)
    search = result.summary(result.search_latencies_s)
    print_table(
        screen, f"Pin creation: {result.published} pins at {result.achieved_rate:.1f}/s (asked {rate:g}/s)",
        ["measure", "p50", "p95", "p99", "max", "count"],
        [[name, *(f"{s.get(q, float('nan')) * 1000:,.0f} ms" for q in ("p50", "p95", "p99", "max")),
          f"{s.get('count', 0):.0f}"]
         for name, s in (("publish -> searchable", latency), ("visual search (HTTP, end to end)", search))],
        caption=command,
    )
    screen.print(f"searchable: {result.searchable}/{result.published}; worker index holds "
                 f"{result.worker_index_pins}; search hit@1 on augmented copies: "
                 f"{result.search_hit_at_1}/{len(result.search_latencies_s)}")
    p99 = latency.get("p99", float("inf"))
    p95 = search.get("p95", float("inf"))
    screen.print(f"publish->searchable p99 {p99:.2f} s ({'meets' if p99 < GOAL_P99_S else 'MISSES'} "
                 f"< {GOAL_P99_S:g} s); search p95 {p95 * 1000:.0f} ms "
                 f"({'meets' if p95 < SEARCH_GOAL_P95_S else 'MISSES'} < {SEARCH_GOAL_P95_S * 1000:.0f} ms)")
    path = write_json(out or default_result_path("pins"), result.to_json(command))
    screen.print(f"wrote {path}")


@bench.command("pinstore")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def pinstore(args: tuple[str, ...]) -> None:
    """HBase pin store: batch write latency vs bare happybase loops (options: see --help of the module)."""
    from streams.bench import pinstore as module

    module.main(list(args))


@bench.command("graph")
@click.option("--interactions", type=click.IntRange(min=1000), default=200_000, show_default=True,
              help="Interactions of the planted-interest workload, produced once into a private topic.")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Measured repetitions (after one warm-up); figures are their medians.")
@click.option("--batch", type=click.IntRange(min=1, max=100_000), default=2000, show_default=True,
              help="Records per consume call, i.e. per processor batch and HBase flush.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the workload.")
@click.option("--profile/--no-profile", default=True, show_default=True,
              help="One more, unmeasured run under cProfile: where the time goes.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON result file  [default: bench/results/graph-<date>.json]")
@reports_errors
def graph(interactions: int, repeat: int, batch: int, seed: int, profile: bool, out: Path | None) -> None:
    """Sustained interactions/s through the graph processor vs a bare confluent-kafka consume loop."""
    from streams.bench.graph import BARE, BARE_DECODED, GOAL_RATE, OURS, PATHS, STAGES, run_graph_bench
    from streams.bench.report import default_result_path, fmt_rate, print_table, write_json
    from streams.cli.common import settings_or_exit

    settings = settings_or_exit()
    screen = console()
    with screen.status("preparing...") as status:
        result = run_graph_bench(settings, interactions, repeat, batch, seed, profile=profile,
                                 progress=status.update)
    command = (f"pinstream bench graph --interactions {interactions} --repeat {repeat} --batch {batch} "
               f"--seed {seed}")
    print_table(
        screen, f"Graph stage: median of {repeat} runs x {interactions:,} interactions, batches of {batch}",
        ["path", "interactions/s", "min", "max", "vs bare", "vs bare+decode"],
        [[p, fmt_rate(result.series(p).median), fmt_rate(min(result.rates[p])),
          fmt_rate(max(result.rates[p])), f"{result.ratio(p):.2f}", f"{result.ratio(p, BARE_DECODED):.2f}"]
         for p in PATHS],
        caption=f"{command}\nrates from each path's first record to its last (deltas acknowledged)",
    )
    shares = result.stage_shares()
    screen.print("where our time goes (median share): "
                 + ", ".join(f"{stage} {shares[stage]:.0%}" for stage in STAGES))
    screen.print("counts (last run): " + ", ".join(f"{k} {v:,}" for k, v in result.counts.items()))
    screen.print("CPU of this process per wall second: "
                 + ", ".join(f"{cores:.2f}" for cores in result.cores_busy) + " cores")
    for function, seconds, share in result.profile[:10]:
        screen.print(f"  {share:6.1%} {seconds:7.2f} s  {function}")
    rate = result.series(OURS).median
    screen.print(f"{fmt_rate(rate)} interactions/s ({'meets' if rate >= GOAL_RATE else 'BELOW'} the "
                 f"{fmt_rate(GOAL_RATE)}/s goal); {result.ratio():.2f} of {BARE}")
    path = write_json(out or default_result_path("graph"), result.to_json(command))
    screen.print(f"wrote {path}")


@bench.command("feed-quality")
@click.option("--users", type=click.IntRange(min=10), default=500, show_default=True)
@click.option("--pins", type=click.IntRange(min=100), default=5000, show_default=True)
@click.option("--days", type=click.IntRange(min=1), default=14, show_default=True,
              help="Days of interactions generated.")
@click.option("--sessions", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Sessions per user (scaled by each user's activity).")
@click.option("--held-out", type=click.IntRange(min=1), default=3, show_default=True,
              help="Last positively engaged pins held out per user.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the workload.")
@click.option("--impression-weight", type=float, default=None,
              help="user->pin weight of an impression  [default: the graph_weight_impression setting]")
@click.option("--latency-runs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Times each evaluated feed is computed for the latency figures.")
@click.option("--scale-users", type=click.IntRange(min=0), default=5000, show_default=True,
              help="Users of the bigger world timed at ~10k candidates (0: skip).")
@click.option("--scale-pins", type=click.IntRange(min=100), default=50_000, show_default=True)
@click.option("--scale-feeds", type=click.IntRange(min=1), default=200, show_default=True,
              help="Feeds timed in the bigger world (its most active users).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON result file  [default: bench/results/feed-quality-<date>.json]")
@reports_errors
def feed_quality(users: int, pins: int, days: int, sessions: float, held_out: int, seed: int,
                 impression_weight: float | None, latency_runs: int, scale_users: int, scale_pins: int,
                 scale_feeds: int, out: Path | None) -> None:
    """HR@10/HR@50/MRR of home feeds vs popularity and random, and ranker latency per feed."""
    import os

    from processors.feed import FeedParams
    from streams.bench.feed_quality import (
        GOAL_POPULARITY_RATIO,
        LATENCY_COLUMNS,
        QUALITY_COLUMNS,
        Workload,
        latency_rows,
        quality_rows,
        run_feed_latency,
        run_feed_quality,
    )
    from streams.bench.report import default_result_path, print_table, write_json
    from streams.cli.common import settings_or_exit

    settings = settings_or_exit()
    params = FeedParams.from_settings(settings)
    workload = Workload(users=users, pins=pins, days=days, sessions_per_user=sessions, held_out=held_out,
                        seed=seed, impression_weight=impression_weight)
    load_before = os.getloadavg()
    screen = console()
    with screen.status("preparing...") as status:
        quality = run_feed_quality(workload, params, settings, repeat_latency=latency_runs,
                                   progress=status.update)
        latency = None
        if scale_users:
            scale = Workload(users=scale_users, pins=scale_pins, days=days, sessions_per_user=sessions,
                             seed=seed, impression_weight=impression_weight)
            latency = run_feed_latency(scale, params, settings, scale_feeds, progress=status.update)
    command = (f"pinstream bench feed-quality --users {users} --pins {pins} --days {days} --sessions "
               f"{sessions:g} --held-out {held_out} --seed {seed} --latency-runs {latency_runs} "
               f"--scale-users {scale_users} --scale-pins {scale_pins} --scale-feeds {scale_feeds}"
               + (f" --impression-weight {impression_weight:g}" if impression_weight is not None else ""))
    print_table(screen, f"Feed quality: {quality.evaluated_users} users with held-out pins, "
                        f"{quality.mean_candidates:,.0f} candidates per feed on average",
                QUALITY_COLUMNS, quality_rows(quality),
                caption=f"{command}\nload average before: {', '.join(f'{v:.1f}' for v in load_before)}")
    if latency is not None:
        print_table(screen, f"Ranker latency, {latency.feeds} most active of {scale_users:,} users, "
                            f"{latency.events:,} interactions", LATENCY_COLUMNS, latency_rows(latency))
    ours, popular = quality.methods[0].hr(10), quality.method("popularity").hr(10)
    verdict = "meets" if popular and ours >= GOAL_POPULARITY_RATIO * popular else "BELOW"
    screen.print(f"HR@10 {ours:.3f} = {ours / popular if popular else float('inf'):.1f}x popularity "
                 f"({verdict} the {GOAL_POPULARITY_RATIO:g}x goal)")
    payload = quality.to_json(command) | {"load_before": load_before,
                                          "latency_at_scale": latency.to_json() if latency else None}
    path = write_json(out or default_result_path("feed-quality"), payload)
    screen.print(f"wrote {path}")


@bench.command("feed")
@click.option("--rates", default="1000,5000", show_default=True,
              help="Sustained interaction rates (per second), comma-separated, one phase each.")
@click.option("--duration", type=click.FloatRange(min=1), default=20.0, show_default=True,
              help="Seconds of sending per rate.")
@click.option("--users", type=click.IntRange(min=10), default=2000, show_default=True,
              help="Users of the planted-interest workload (pins: 5 per user).")
@click.option("--warmup", type=click.IntRange(min=0), default=20_000, show_default=True,
              help="Interactions sent first, as fast as possible, to build the graph.")
@click.option("--reads", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Feed reads per read path, after the rate phases.")
@click.option("--refresh-interval", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="The worker's feed_refresh_interval_s (coalescing per user).")
@click.option("--rerank-share", type=click.FloatRange(min=0.01, max=1.0), default=None,
              help="The worker's feed_rerank_share  [default: the setting's default]")
@click.option("--live-process/--no-live-process", default=None,
              help="The worker's feed_live_process  [default: the setting's default]")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("bench/cache/feed"),
              show_default=True, help="Private Redis, blobs, index and log of the bench's worker.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON result file  [default: bench/results/feed-<date>.json]")
@reports_errors
def feed(rates: str, duration: float, users: int, warmup: int, reads: int, refresh_interval: float,
         rerank_share: float | None, live_process: bool | None, seed: int, workdir: Path,
         out: Path | None) -> None:
    """Interaction -> feed refreshed in Redis p50/p99 at sustained rates, and feed read p99, beside
    bare confluent-kafka produce->consume and bare redis ZREVRANGE."""
    from streams.bench.feed import (
        GOAL_P99_S,
        READ_COLUMNS,
        REFRESH_COLUMNS,
        YOUNG_HBASE_S,
        result_rows,
        run_feed_bench,
    )
    from streams.bench.report import default_result_path, print_table, write_json

    try:
        wanted = [float(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        raise click.BadParameter(f"{rates!r} is not a comma-separated list of numbers",
                                 param_hint="--rates") from None
    if not wanted or min(wanted) <= 0:
        raise click.BadParameter("give at least one positive rate", param_hint="--rates")
    screen = console()
    with screen.status("preparing...") as status:
        result = run_feed_bench(workdir, rates=wanted, duration_s=duration, users=users, warmup=warmup,
                                reads=reads, seed=seed, refresh_interval_s=refresh_interval,
                                rerank_share=rerank_share, live_process=live_process,
                                progress=status.update)
    command = (f"pinstream bench feed --rates {rates} --duration {duration:g} --users {users} --warmup "
               f"{warmup} --reads {reads} --refresh-interval {refresh_interval:g} --seed {seed}"
               + (f" --rerank-share {rerank_share:g}" if rerank_share is not None else "")
               + ("" if live_process is None else " --live-process" if live_process
                  else " --no-live-process"))
    refresh, read = result_rows(result)
    load = ", ".join(f"{one[0]:.1f}" for one in result.load)
    print_table(screen, "Interaction -> feed changed in Redis (per change, its oldest interaction)",
                REFRESH_COLUMNS, refresh, caption=f"{command}\nload average (1 min) through the run: {load}")
    print_table(screen, "Feed reads (cached feeds, interleaved)", READ_COLUMNS, read)
    screen.print("worker's feed computation, mean per stage: "
                 + ", ".join(f"{stage} {ms:.1f} ms" for stage, ms in result.feed_stage_ms.items()))
    screen.print("graph rows read by feeds: "
                 + ", ".join(f"{source} {count:,.0f}" for source, count in result.graph_rows.items()))
    for phase in result.phases:
        if phase.batches.get("batches"):
            timings = ", ".join(f"{key[:-3]} {value:.0f}" for key, value in phase.batches.items()
                                if key.endswith("_ms") and not key.startswith("gc_"))
            screen.print(f"{phase.rate:,.0f}/s: {phase.batches['batches']:,.0f} interaction batches, "
                         f"{phase.batches['records_mean']:.0f} records each; mean ms: {timings}; "
                         f"{phase.batches['gc_full']:.0f} full GCs, "
                         f"{phase.batches['gc_full_pause_ms']:.0f} ms each; worker CPU "
                         f"{phase.batches.get('cpu_s', 0.0):.1f} s (live patch process "
                         f"{phase.batches.get('live_cpu_s', 0.0):.1f} s), "
                         f"{phase.batches.get('cpu_us_per_record', 0.0):.0f} us per interaction")
    for phase in result.phases:
        if phase.cores:
            screen.print(f"{phase.rate:,.0f}/s: cores while sending: "
                         + ", ".join(f"{name} {cores:.2f}" for name, cores in phase.cores.items()))
    for phase in result.phases:
        figures = phase.to_json()
        # The SLO is the feed in Redis: live patches where they land (the announcements of
        # patched feeds are coalesced per user, so they lag by design), re-ranks when announced.
        for change, key in (("live patch in Redis", "live_redis_latency_s"),
                            ("full re-rank", "refresh_latency_s")):
            stats = figures[key]
            p99 = float("inf") if stats.get("p99_above") else stats.get("p99", float("inf"))
            shown = f"> {stats['p99'] * 1000:,.0f}" if stats.get("p99_above") else f"{p99 * 1000:,.0f}"
            screen.print(f"{phase.rate:,.0f}/s: {change} p99 {shown} ms "
                         f"({'meets' if p99 < GOAL_P99_S else 'MISSES'} < {GOAL_P99_S * 1000:.0f} ms)")
    young = result.young_hbase()
    if young is not None:
        screen.print(f"note: HBase had run {young:.0f} s when this bench started; its writes are "
                     f"slow for about {YOUNG_HBASE_S / 60:.0f} minutes after a start, so the live "
                     "tail above is pessimistic (docs/benchmarks.md, \"Feed refresh and read\")")
    path = write_json(out or default_result_path("feed"), result.to_json(command))
    screen.print(f"wrote {path}")


@bench.command("broker")
@click.option("--rate", type=click.IntRange(min=100, max=100_000), default=5_000, show_default=True,
              help="Records per second produced in each phase.")
@click.option("--duration", type=click.FloatRange(min=2.0, max=600.0), default=15.0, show_default=True,
              help="Seconds each phase sends for.")
@click.option("--groups", type=click.IntRange(min=1, max=8), default=2, show_default=True,
              help="Consumer groups reading the topic (the worker's stage and the live patch process: 2).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON result file  [default: bench/results/broker-<date>.json]")
@reports_errors
def broker(rate: int, duration: float, groups: int, out: Path | None) -> None:
    """The local broker's CPU at a steady rate: consumer defaults vs our fetch wait and commit interval."""
    from streams.bench.broker import run_broker_bench
    from streams.bench.report import default_result_path, print_table, write_json
    from streams.cli.common import settings_or_exit

    settings = settings_or_exit()
    screen = console()
    with screen.status("preparing...") as status:
        result = run_broker_bench(settings, rate, duration, groups, progress=status.update)
    command = f"pinstream bench broker --rate {rate} --duration {duration:g} --groups {groups}"
    baseline = result.phases[0]
    print_table(
        screen, f"Broker CPU: {rate:,} records/s for {duration:g} s per phase, {groups} consumer group(s)",
        ["consumers", "broker cores", "vs defaults", "commits", "received", "p50 ms", "p99 ms"],
        [[p.profile.name, f"{p.broker_cores:.2f}",
          f"{p.broker_cores / baseline.broker_cores:.2f}" if baseline.broker_cores else "-",
          f"{p.commits:,}", " / ".join(f"{n:,}" for n in p.received),
          *("-" if (ms := p.latency_ms(q)) is None else f"{ms:.1f}" for q in (50, 99))]
         for p in result.phases],
        caption=f"{command}\nlatency: produce -> consume, every group's records; "
                "the broker's CPU from its process while the phase sent",
    )
    for phase in result.phases:
        if phase.consumer_errors:
            screen.print(f"[yellow]{phase.profile.name}: the consumers reported "
                         f"{phase.consumer_errors:,} errors (see the log)[/yellow]")
        short = [n for n in phase.received if n < phase.sent]
        if short:
            screen.print(f"[yellow]{phase.profile.name}: a group received {min(short):,} of "
                         f"{phase.sent:,} records within 10 s of the last send[/yellow]")
    path = write_json(out or default_result_path("broker"), result.to_json(command))
    screen.print(f"wrote {path}")
