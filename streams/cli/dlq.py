"""`pinstream dlq list | show | redrive`: the dead-letter topic for operators."""

from __future__ import annotations

import json
from datetime import datetime

import click
from rich.table import Table

from streams.cli.common import console, err, reports_errors, settings_or_exit
from streams.dlq import (
    DeadLetter,
    LetterFilter,
    decode_value,
    execute_redrive,
    find_letter,
    plan_redrive,
    read_dead_letters,
)
from streams.errors import InputError
from streams.jsonl import parse_event_time

_filters = [
    click.option("--reason", default=None, help="Only letters with this reason (exact)."),
    click.option("--source", default=None, help="Only letters whose source topic contains this."),
    click.option("--since", default=None, help="Only letters written at or after this ISO-8601 time."),
]


def with_filters(func: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_filters):
        func = option(func)
    return func


def letter_filter(reason: str | None, source: str | None, since: str | None) -> LetterFilter:
    when: datetime | None = None
    if since is not None:
        try:
            when = parse_event_time(since)
        except InputError as exc:
            raise click.BadParameter(f"{exc}; e.g. 2026-01-31T12:00:00Z", param_hint="--since") from exc
    return LetterFilter(reason=reason, source=source, since=when)


@click.group()
def dlq() -> None:
    """List, show and redrive dead letters (ops.deadletter.v1)."""


@dlq.command("list")
@with_filters
@click.option("--limit", type=int, default=100, show_default=True, help="Rows shown at most.")
@reports_errors
def list_cmd(reason: str | None, source: str | None, since: str | None, limit: int) -> None:
    """Dead letters with id (PARTITION:OFFSET), time, reason, source and key."""
    settings = settings_or_exit()
    table = Table("id", "time", "reason", "source", "key", "bytes")
    counts: dict[str, int] = {}
    total = 0
    for letter in read_dead_letters(settings, letter_filter(reason, source, since)):
        total += 1
        counts[letter.reason] = counts.get(letter.reason, 0) + 1
        if total <= limit:
            table.add_row(letter.id, letter.time.isoformat(timespec="seconds") if letter.time else "-",
                          letter.reason, letter.source or "-",
                          (letter.key or b"").decode(errors="replace"), str(len(letter.value or b"")))
    console().print(table)
    summary = ", ".join(f"{r} {n}" for r, n in sorted(counts.items()))
    click.echo(f"{total} dead letters" + (f" ({summary})" if summary else "")
               + (f"; first {limit} shown (--limit)" if total > limit else ""))


@dlq.command("show")
@click.argument("letter_id")
@reports_errors
def show_cmd(letter_id: str) -> None:
    """One dead letter (LETTER_ID = PARTITION:OFFSET from `dlq list`): headers, and the value
    decoded when it is a contract event (else its first bytes in hex), as JSON."""
    from streams.registry import build_codec

    settings = settings_or_exit()
    letter = find_letter(settings, letter_id)
    decoded = decode_value(letter, build_codec(settings))
    out = {
        "id": letter.id, "time": letter.time.isoformat() if letter.time else None,
        "reason": letter.reason, "source": letter.source,
        "key": (letter.key or b"").decode(errors="replace"),
        "headers": {k: _header_text(k, v) for k, v in letter.headers},
        "value": decoded if decoded is not None else {"undecoded_hex": (letter.value or b"")[:64].hex(),
                                                      "bytes": len(letter.value or b"")},
    }
    click.echo(json.dumps(out, indent=2, default=str))


def _header_text(name: str, value: bytes) -> object:
    text = value.decode(errors="replace")
    if name.endswith(".history"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


@dlq.command("redrive")
@click.argument("letter_ids", nargs=-1)
@with_filters
@click.option("--execute", is_flag=True, help="Publish; without it this is a dry run.")
@reports_errors
def redrive_cmd(letter_ids: tuple[str, ...], reason: str | None, source: str | None, since: str | None,
                execute: bool) -> None:
    """Re-publish dead letters to the topic they came from (the reconciler's to
    ops.reconciliation.v1): the letters named by id, or those matching the filters. Dry run unless
    --execute. Each redriven record carries `pinstream.dlq.redrive_of`, and a letter already
    redriven is refused, so running the same redrive twice sends nothing twice."""
    settings = settings_or_exit()
    if not letter_ids and not (reason or source or since):
        raise click.UsageError("name letters (PARTITION:OFFSET from `pinstream dlq list`) or select "
                               "them with --reason/--source/--since")
    letters: list[DeadLetter]
    if letter_ids:
        letters = [find_letter(settings, letter_id) for letter_id in letter_ids]
        letters = [le for le in letters if letter_filter(reason, source, since).matches(le)]
    else:
        letters = list(read_dead_letters(settings, letter_filter(reason, source, since)))
    plans = plan_redrive(settings, letters)
    table = Table("id", "reason", "to", "status")
    for plan in plans:
        table.add_row(plan.letter.id, plan.letter.reason, plan.target or "-",
                      f"refused: {plan.refused}" if plan.refused else ("send" if execute else "would send"))
    console().print(table)
    ready = [p for p in plans if p.refused is None]
    if not execute:
        click.echo(f"dry run: {len(ready)} of {len(plans)} letters would be redriven; add --execute")
        return
    delivered = execute_redrive(settings, ready)
    click.echo(f"redriven {delivered} of {len(plans)} letters ({len(plans) - len(ready)} refused)")
    if delivered != len(ready):
        err("some letters were not acknowledged by Kafka; rerun the same command: letters already "
            "redriven are refused")
        raise SystemExit(1)
