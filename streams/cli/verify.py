"""`pinstream verify`: check the pipeline's invariants on the configured namespace and print them
with counts; exit code 1 when one fails (what the fault and load campaigns call afterwards)."""

from __future__ import annotations

import json
import sys

import click
from confluent_kafka import KafkaException
from rich.table import Table

from streams.cli.common import console, reports_errors, settings_or_exit
from streams.errors import PinstreamError
from streams.settings import Settings


@click.command()
@click.option("--worker", "worker_url", default=None,
              help="A running worker whose /healthz gives the index size  "
                   "[default: read the index snapshot under PINSTREAM_INDEX_DIR]")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@reports_errors
def verify(worker_url: str | None, as_json: bool) -> None:
    """Read every topic and store of the namespace (PINSTREAM_TOPIC_PREFIX,
    PINSTREAM_HBASE_TABLE_PREFIX) and check: each created pin is embedded, indexed and stored, or
    dead-lettered with a reason, or pending reconciliation; the HBase graph equals a batch
    recomputation from the input topics; each active user's cached feed is fresh; 0 lost and 0
    double-counted. Run it once the workers have caught up."""
    from processors.invariant_inputs import verify_namespace

    settings = settings_or_exit()
    verdict, facts = verify_namespace(settings, worker_url=worker_url)
    backlog = _worker_backlog(settings)
    if as_json:
        click.echo(json.dumps(verdict.to_json() | {"dead_letters": facts.dead_letter_reasons,
                                                   "worker_backlog": backlog}, indent=2))
    else:
        screen = console()
        for check in verdict.checks:
            table = Table("count", "value", title=f"{'PASS' if check.ok else 'FAIL'}  {check.name}",
                          title_justify="left")
            for name, value in check.counts.items():
                table.add_row(name, str(value))
            screen.print(table)
            if check.note:
                screen.print(f"  note: {check.note}")
            for example in check.examples:
                screen.print(f"  e.g. {example}")
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(facts.dead_letter_reasons.items())) or "none"
        screen.print(f"dead letters by source and reason: {reasons}")
        if backlog:
            screen.print(f"note: the worker's group has {backlog} records not yet processed; "
                         "their effects count as lost until it catches up")
        screen.print(f"lost={verdict.lost} double_counted={verdict.double_counted} "
                     f"verdict={'PASS' if verdict.ok else 'FAIL'}")
    if not verdict.ok:
        sys.exit(1)


def _worker_backlog(settings: Settings) -> int | None:
    """Records the namespace's worker groups (the faust group and the interaction stage's) have
    not committed past; None when a group is unknown or Kafka does not say."""
    from streams.groups import group_lag, worker_groups

    total = 0
    for group in worker_groups(settings):
        try:
            rows = group_lag(settings, group)
        except (PinstreamError, KafkaException, TimeoutError):
            return None
        if not rows:
            return None
        total += sum(row.lag for row in rows)
    return total
