"""`pinstream produce pins|interactions FILE.jsonl`: validate every line, publish the good ones.

Bad lines are reported as FILE:LINE: reason and do not stop the good ones; the exit code is 1 when
any line was refused or not acknowledged by Kafka, else 0.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import click

from streams.cli.common import err, reports_errors, settings_or_exit
from streams.errors import ContractError, InputError, RateLimitedError
from streams.jsonl import Line, interaction_arguments, pin_arguments, read_objects
from streams.metrics import serve_metrics
from streams.producer import DeliveryReport, PinProducer
from streams.ratelimit import RateLimiter


@dataclass
class _Tally:
    source: str
    read: int = 0
    invalid: int = 0
    rate_limited: int = 0
    acknowledged: int = 0
    not_acknowledged: int = 0
    first_errors: list[str] = field(default_factory=list)

    def on_delivery(self, report: DeliveryReport) -> None:
        if report.ok:
            self.acknowledged += 1
        else:
            self.not_acknowledged += 1
            err(f"{self.source}:{report.context}: not acknowledged by Kafka: {report.error}")

    @property
    def failed(self) -> int:
        return self.invalid + self.rate_limited + self.not_acknowledged


@click.command()
@click.argument("kind", type=click.Choice(["pins", "interactions"]))
@click.argument("file", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--rate-limit", type=int, default=None,
              help="Pin creations per user per minute (default: settings; 0 = off, e.g. backfills).")
@reports_errors
def produce(kind: str, file: TextIO, rate_limit: int | None) -> None:
    """Validate and publish pins or interactions from a JSONL FILE ('-' = stdin)."""
    settings = settings_or_exit()
    source = "<stdin>" if file is sys.stdin else file.name
    tally = _Tally(source)
    serve_metrics(settings)
    limiter = RateLimiter(settings.pin_rate_limit_per_minute if rate_limit is None else rate_limit)
    producer = PinProducer(settings, rate_limiter=limiter, on_delivery=tally.on_delivery)
    send: Callable[[Line], Any]
    if kind == "pins":
        def send(line: Line) -> Any:
            return producer.create_pin(**pin_arguments(line), context=line.number)
    else:
        def send(line: Line) -> Any:
            return producer.interact(**interaction_arguments(line), context=line.number)
    try:
        for item in read_objects(file):
            tally.read += 1
            if isinstance(item, InputError):
                tally.invalid += 1
                err(f"{source}:{item.line}: {item}".replace(f"line {item.line}: ", ""))
                continue
            try:
                send(item)
            except (InputError, ContractError) as exc:
                tally.invalid += 1
                err(f"{source}:{item.number}: {str(exc).replace(f'line {item.number}: ', '')}")
            except RateLimitedError as exc:
                tally.rate_limited += 1
                err(f"{source}:{item.number}: refused: {exc}")
    finally:
        producer.close()
    click.echo(
        f"{kind}: {tally.read} lines, {tally.acknowledged} acknowledged, {tally.invalid} invalid, "
        f"{tally.rate_limited} rate-limited, {tally.not_acknowledged} not acknowledged",
        err=True,
    )
    if tally.failed:
        raise SystemExit(1)
