"""`pinstream groups list | lag | reset`."""

from __future__ import annotations

import click
from rich.table import Table

from streams.cli.common import console, reports_errors, settings_or_exit
from streams.errors import InputError
from streams.groups import execute_reset, group_lag, list_groups, plan_reset
from streams.jsonl import parse_event_time


@click.group()
def groups() -> None:
    """Consumer-group lag and offset resets."""


@groups.command("list")
@reports_errors
def list_cmd() -> None:
    """List consumer groups."""
    for name in list_groups(settings_or_exit()):
        click.echo(name)


@groups.command("lag")
@click.argument("group", required=False)
@reports_errors
def lag_cmd(group: str | None) -> None:
    """Committed offset, end offset and lag per partition (all groups when GROUP is omitted)."""
    settings = settings_or_exit()
    names = [group] if group else list_groups(settings)
    table = Table("group", "topic", "partition", "committed", "end", "lag")
    for name in names:
        for row in group_lag(settings, name):
            table.add_row(name, row.topic, str(row.partition),
                          "-" if row.committed is None else str(row.committed), str(row.end),
                          str(row.lag))
    console().print(table)


@groups.command("reset")
@click.argument("group")
@click.option("--to-datetime", "to", required=True, help="ISO-8601 time with offset or Z.")
@click.option("--topic", "topics", multiple=True, help="Only these topics (default: all committed).")
@click.option("--execute", is_flag=True, help="Apply the reset; without it this is a dry run.")
@reports_errors
def reset_cmd(group: str, to: str, topics: tuple[str, ...], execute: bool) -> None:
    """Move GROUP's offsets to the first record at or after --to-datetime (dry run by default)."""
    settings = settings_or_exit()
    try:
        when = parse_event_time(to)
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="--to-datetime") from exc
    assert when is not None
    moves = plan_reset(settings, group, when, [settings.topic(t) for t in topics] or None)
    table = Table("topic", "partition", "current", "new")
    for m in moves:
        table.add_row(m.topic, str(m.partition), "-" if m.current is None else str(m.current),
                      str(m.target))
    console().print(table)
    if not execute:
        click.echo("dry run: nothing changed; add --execute to apply")
        return
    execute_reset(settings, group, moves)
    click.echo(f"group {group}: {len(moves)} partition offsets reset")
