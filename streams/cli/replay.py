"""`pinstream replay --topic T --from X --to Y --into T2`."""

from __future__ import annotations

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streams.cli.common import err, reports_errors, settings_or_exit
from streams.errors import InputError
from streams.metrics import serve_metrics
from streams.offsets import parse_position
from streams.replay import plan_replay, run_replay


@click.command()
@click.option("--topic", required=True, help="Topic to copy from.")
@click.option("--from", "start", default="beginning", show_default=True,
              help="Offset (in every partition), ISO-8601 time, 'beginning' or 'end'. Inclusive.")
@click.option("--to", "end", default="end", show_default=True,
              help="Offset, ISO-8601 time or 'end' (fixed when the replay starts). Exclusive.")
@click.option("--into", required=True, help="Topic to copy into (it must exist).")
@click.option("--partition", "partitions", type=int, multiple=True, help="Only these partitions.")
@click.option("--dry-run", is_flag=True, help="Show the plan and stop.")
@reports_errors
def replay(topic: str, start: str, end: str, into: str, partitions: tuple[int, ...],
           dry_run: bool) -> None:
    """Copy a range of TOPIC into another topic exactly: keys, values, headers, timestamps,
    plus a `pinstream.replay.of` header naming the original record."""
    settings = settings_or_exit()
    try:
        start_pos, end_pos = parse_position(start), parse_position(end)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from exc
    serve_metrics(settings)
    plan = plan_replay(settings, settings.topic(topic), settings.topic(into), start_pos, end_pos,
                       list(partitions) or None)
    for r in plan.ranges:
        err(f"  {plan.topic}/{r.partition}: offsets [{r.start}, {r.end}) -> {r.span} at most")
    err(f"replay {plan.topic} ({start_pos} .. {end_pos}) into {plan.into}: up to "
        f"{plan.upper_bound} records, partitions {'kept' if plan.keep_partitions else 'by key'}")
    if dry_run:
        return
    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("replay", total=plan.upper_bound)
        result = run_replay(settings, plan, progress=lambda n: bar.advance(task, n))
    for p, count in sorted(result.read.items()):
        err(f"  partition {p}: {count} records read")
    click.echo(f"read {result.total_read}, acknowledged {result.acknowledged}, failed {result.failed}")
    for line in result.errors:
        err(f"  failed: {line}")
    if result.failed or result.acknowledged != result.total_read:
        raise SystemExit(1)
