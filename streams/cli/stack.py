"""`pinstream stack up|down|status|logs`: the local Kafka, Redis and HBase servers."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import click
from rich.console import Console
from rich.table import Table

from streams.errors import PinstreamError, StackError
from streams.settings import get_settings
from streams.stack import SERVICES, ServiceChange, ServiceState, ServiceStatus
from streams.stack import down as stack_down
from streams.stack import logs as stack_logs
from streams.stack import status as stack_status
from streams.stack import up as stack_up

console = Console(highlight=False, soft_wrap=True)
T = TypeVar("T")

_STATE_STYLE = {
    ServiceState.RUNNING: "green",
    ServiceState.EXTERNAL: "cyan",
    ServiceState.UNHEALTHY: "yellow",
    ServiceState.STOPPED: "red",
}

services_argument = click.argument("services", nargs=-1, type=click.Choice(SERVICES, case_sensitive=False))


def _run(action: Callable[[], T]) -> T:
    """Run a stack action; our errors become a message, the log tail and exit status 1."""
    try:
        return action()
    except PinstreamError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        if isinstance(exc, StackError) and exc.log_tail:
            console.rule(f"last lines of the {exc.service} log")
            console.print(exc.log_tail, markup=False)
            console.rule()
        raise SystemExit(1) from exc


def _progress(message: str) -> None:
    console.print(message, markup=False, soft_wrap=True)


def _status_table(rows: Sequence[ServiceStatus]) -> Table:
    table = Table(title=f"pinstream stack ({get_settings().stack_dir})")
    for column in ("service", "pid", "ports", "state", "check"):
        table.add_column(column)
    for row in rows:
        style = _STATE_STYLE[row.state]
        table.add_row(
            row.name,
            str(row.pid or "-"),
            ",".join(str(port) for port in row.ports),
            f"[{style}]{row.state}[/]",
            row.detail,
        )
    return table


def _changes_table(changes: Sequence[ServiceChange], verb: str) -> Table:
    table = Table(title=f"stack {verb}")
    for column in ("service", "action", "seconds", "pid", "check"):
        table.add_column(column)
    for change in changes:
        table.add_row(
            change.name,
            str(change.action),
            f"{change.seconds:.1f}",
            str(change.status.pid or "-"),
            change.status.detail,
        )
    return table


@click.group()
def stack() -> None:
    """Start, stop and inspect the local stack: kafka, redis, hbase (master) and thrift.

    Data, logs and pid files live under the settings' stack_dir (default .stack/).
    """


@stack.command()
@services_argument
def up(services: tuple[str, ...]) -> None:
    """Start SERVICES (default: all) and wait until each answers its protocol."""
    began = time.monotonic()
    changes = _run(lambda: stack_up(services, progress=_progress))
    console.print(_changes_table(changes, "up"))
    console.print(f"stack up in {time.monotonic() - began:.1f} s")


@stack.command()
@services_argument
def down(services: tuple[str, ...]) -> None:
    """Stop SERVICES (default: all) that the stack started."""
    changes = _run(lambda: stack_down(services, progress=_progress))
    console.print(_changes_table(changes, "down"))


@stack.command()
@services_argument
def status(services: tuple[str, ...]) -> None:
    """Show each service's pid, ports, state and check; exit 1 if one is not healthy."""
    rows = _run(lambda: stack_status(services))
    console.print(_status_table(rows))
    if not all(row.healthy for row in rows):
        raise SystemExit(1)


@stack.command()
@click.argument("service", type=click.Choice(SERVICES, case_sensitive=False))
@click.option("-n", "--lines", default=40, show_default=True, help="how many lines")
def logs(service: str, lines: int) -> None:
    """Print the end of SERVICE's log since its last start."""
    console.print(_run(lambda: stack_logs(service, lines=lines)), markup=False)


# `start`/`stop` read better for one service in fault drills: `pinstream stack stop thrift`.
stack.add_command(up, name="start")
stack.add_command(down, name="stop")
