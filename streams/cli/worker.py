"""`pinstream worker`: the stream processors and the web views in one faust worker process."""

from __future__ import annotations

import click

from streams.cli.common import settings_or_exit


@click.command()
@click.option("--loglevel", type=click.Choice(["crit", "error", "warn", "info", "debug"]),
              default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run the worker: embed pins (pins.created.v1 -> embeddings, HBase), follow the ANN index,
    turn interactions into the graph (HBase, graph.edges.v1) and home feeds (Redis,
    feeds.updated.v1), serve POST /search/visual, GET /feed/{user} and GET /healthz on
    PINSTREAM_WEB_HOST:PINSTREAM_WEB_PORT, and metrics on PINSTREAM_METRICS_PORT. Stop with
    Ctrl-C (or SIGTERM): in-flight batches finish."""
    from faust.worker import Worker

    from streams.app import create_app
    from streams.metrics import serve_metrics, watch_gc

    settings = settings_or_exit()
    serve_metrics(settings)
    watch_gc()
    app = create_app(settings)
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
