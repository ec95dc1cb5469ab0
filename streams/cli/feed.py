"""`pinstream feed USER`: a user's home feed from a running worker (Redis first, else computed)."""

from __future__ import annotations

import json

import click
import httpx
from rich.table import Table

from streams.cli.common import console, settings_or_exit


@click.command()
@click.argument("user")
@click.option("-n", "count", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--worker", "worker_url", default=None,
              help="Worker base URL  [default: http://PINSTREAM_WEB_HOST:PINSTREAM_WEB_PORT]")
@click.option("--json", "as_json", is_flag=True, help="Print the worker's JSON answer.")
def feed(user: str, count: int, offset: int, worker_url: str | None, as_json: bool) -> None:
    """USER's ranked home feed: pins, scores and why each is there."""
    settings = settings_or_exit()
    base = worker_url or f"http://{settings.web_host}:{settings.web_port}"
    try:
        answer = httpx.get(f"{base}/feed/{user}", params={"count": count, "offset": offset}, timeout=30)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"no worker answered at {base} ({exc}); start one with "
                                   "`pinstream worker`") from exc
    body = answer.json()
    if answer.status_code != 200:
        raise click.ClickException(f"{body.get('error')}: {body.get('message')}")
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    table = Table("#", "pin", "score", "reason")
    for rank, item in enumerate(body["items"], start=offset + 1):
        table.add_row(str(rank), item["pin_id"], f"{item['score']:.4f}", item["reason"])
    screen = console()
    screen.print(table)
    served = "cache" if body["from_cache"] else "computed now"
    fallbacks = ", ".join(body["fallbacks"]) or "none"
    screen.print(f"{len(body['items'])} pins for {user} ({served}; model {body['model']}; "
                 f"fallbacks: {fallbacks})")
