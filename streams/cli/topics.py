"""`pinstream topics apply | list`."""

from __future__ import annotations

import click
from rich.table import Table

from streams.admin import apply_topics, describe_topics
from streams.cli.common import console, reports_errors, settings_or_exit
from streams.topics import BY_NAME


@click.group()
def topics() -> None:
    """Create/update and list the catalogue's topics."""


@topics.command("apply")
@reports_errors
def apply_cmd() -> None:
    """Create missing topics and sync partitions and configs (idempotent)."""
    settings = settings_or_exit()
    changes = apply_topics(settings)
    for change in changes:
        click.echo(f"{change.topic:28} {change.action:10} {change.detail}".rstrip())
    if any(c.action == "refused" for c in changes):
        raise SystemExit(1)


@topics.command("list")
@reports_errors
def list_cmd() -> None:
    """Show the catalogue's topics with partition counts and end offsets."""
    settings = settings_or_exit()
    table = Table("topic", "value schema", "cleanup", "partitions", "records (end offsets)")
    for info in describe_topics(settings):
        spec = BY_NAME.get(info.topic[len(settings.topic_prefix):])
        table.add_row(info.topic, (spec.schema if spec else None) or "raw bytes", info.cleanup_policy,
                      str(info.partitions), f"{info.total_records} {list(info.end_offsets)}")
    console().print(table)
