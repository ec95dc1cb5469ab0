"""`pinstream search IMAGE`: ask a running worker which pins look like IMAGE."""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path

import click
import httpx
from rich.table import Table

from streams.cli.common import console, settings_or_exit


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--user", default=None, help="Re-rank by this user's taste when the graph knows them.")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--text", default=None, help="Words for the text fallback, used if the image fails.")
@click.option("--worker", "worker_url", default=None,
              help="Worker base URL  [default: http://PINSTREAM_WEB_HOST:PINSTREAM_WEB_PORT]")
@click.option("--json", "as_json", is_flag=True, help="Print the worker's JSON answer.")
def search(image: Path, user: str | None, k: int, text: str | None, worker_url: str | None,
           as_json: bool) -> None:
    """Visual search: the pins that look like IMAGE, with scores and metadata."""
    settings = settings_or_exit()
    base = worker_url or f"http://{settings.web_host}:{settings.web_port}"
    data = image.read_bytes()
    if len(data) > settings.search_max_upload_bytes:
        raise click.ClickException(f"{image} has {len(data)} bytes, over search_max_upload_bytes="
                                   f"{settings.search_max_upload_bytes}")
    params: dict[str, str | int] = {"k": k}
    if user:
        params["user"] = user
    if text:
        params["text"] = text
    content_type = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
    if not content_type.startswith("image/"):
        content_type = "application/octet-stream"
    try:
        answer = httpx.post(f"{base}/search/visual", params=params, content=data,
                            headers={"Content-Type": content_type}, timeout=30.0)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"no worker answered at {base} ({exc}); start one with "
                                   "`pinstream worker`") from exc
    body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    if answer.status_code != 200:
        raise click.ClickException(f"{body.get('error', answer.status_code)}: "
                                   f"{body.get('message', answer.text[:200])}")
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    table = Table("#", "pin", "score", "similarity", "title", "board")
    for rank, hit in enumerate(body["hits"], start=1):
        table.add_row(str(rank), hit["pin_id"], f"{hit['score']:.3f}", f"{hit['similarity']:.3f}",
                      hit.get("title", ""), hit.get("board_id", ""))
    screen = console()
    screen.print(table)
    timings = ", ".join(f"{name} {ms:.0f} ms" for name, ms in body["timings_ms"].items())
    served = f"fallback: {body['fallback']}" if body["fallback"] else f"ranked by {body['reranked_by']}"
    screen.print(f"{len(body['hits'])} of {body['candidates']} candidates; {served}; {timings}")
