"""`pinstream reconcile run | status`: the reconciler process, and what it has left to do."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from typing import Any

import click
from rich.table import Table

from streams.cli.common import console, err, reports_errors, settings_or_exit
from streams.settings import Settings

log = logging.getLogger(__name__)


@click.group()
def reconcile() -> None:
    """Re-drive failed side effects from ops.reconciliation.v1, and report on them."""


def build(settings: Settings, seed: int | None) -> tuple[Any, Any, Any]:
    """The reconciler over the real stores: (reconciler, producer, closers)."""
    from PIL import Image

    from processors.backoff import FullJitterBackoff
    from processors.batching import MicroBatcher
    from processors.breaker import BreakerConfig, Breakers
    from processors.embed import PinEmbedStage, make_batch_function
    from processors.feed import FeedComputer, FeedParams, FeedService
    from processors.graph import GraphConfig
    from processors.model import Embedder
    from processors.outbox import KafkaOutbox
    from processors.reconcile import Reconciler, ReconcilerConfig
    from processors.reconcile_events import settings_secrets
    from processors.redrive import CapturingOutbox, FeedRedriver, GraphRedriver, PinRedriver, redrivers
    from sinks.hbase import PinStore
    from sinks.hbase_graph import GraphStore
    from sinks.redis import FeedCache
    from streams.blobs import BlobStore
    from streams.deadletter import DeadLetterWriter
    from streams.events import PinCreated
    from streams.producer import EventProducer
    from streams.registry import build_codec

    codec = build_codec(settings)
    producer = EventProducer(settings, codec=codec)
    # The worker creates the tables; the reconciler must start (and wait) while HBase is down.
    store = PinStore.from_settings(settings, create_tables=False)
    graph_store = GraphStore.from_settings(settings, create_tables=False)
    cache = FeedCache.from_settings(settings)
    batchers: list[MicroBatcher[Any, Any]] = []

    async def embed_stage() -> tuple[PinEmbedStage, CapturingOutbox]:
        embedder = await asyncio.to_thread(Embedder.from_settings, settings)
        batcher: MicroBatcher[PinCreated | Image.Image, Any] = MicroBatcher(
            make_batch_function(embedder, BlobStore(settings.blob_dir), settings),
            max_batch=settings.embed_max_batch, max_wait_ms=settings.embed_max_wait_ms,
            queue_size=settings.embed_queue_size, timeout_s=settings.embed_batch_timeout_s)
        await batcher.start()
        batchers.append(batcher)
        # Failures are captured by the outbox and retried by the reconciler, never re-emitted.
        outbox = CapturingOutbox(KafkaOutbox(producer, lambda *failure: None))
        return PinEmbedStage(embedder=embedder, batcher=batcher, store=store, outbox=outbox,
                             codec=codec), outbox

    computer = FeedComputer(graph_store, trending=cache, preferences=cache,
                            params=FeedParams.from_settings(settings))
    stages = redrivers(
        pins=PinRedriver(embed_stage, lambda: store, codec),
        graph=GraphRedriver(graph_store, GraphConfig.from_settings(settings), producer, codec),
        feed=FeedRedriver(FeedService(computer, cache), cache, producer, codec))
    reconciler = Reconciler(
        stages, DeadLetterWriter(producer), codec,
        backoff=FullJitterBackoff(settings.reconcile_backoff_base_s, settings.reconcile_backoff_cap_s,
                                  random.Random(seed)),
        breakers=Breakers(BreakerConfig(settings.reconcile_breaker_failures,
                                        settings.reconcile_breaker_open_s)),
        config=ReconcilerConfig(settings.reconcile_max_attempts, settings.reconcile_max_buffered),
        secrets=settings_secrets(settings))

    async def close() -> None:
        for batcher in batchers:
            await batcher.stop()
        await asyncio.to_thread(producer.close)
        store.close()
        graph_store.close()
        cache.close()

    return reconciler, producer, close


@reconcile.command("run")
@click.option("--until-idle", "idle_exit_s", type=float, default=None,
              help="Exit once nothing is held and nothing new arrived for this many seconds "
                   "(drain and stop); default: run until Ctrl-C or SIGTERM.")
@click.option("--seed", type=int, default=None, help="Seed of the backoff jitter (reproducible runs).")
@click.option("--loglevel", type=click.Choice(["error", "warning", "info", "debug"]), default="info",
              show_default=True)
@reports_errors
def run_cmd(idle_exit_s: float | None, seed: int | None, loglevel: str) -> None:
    """Consume ops.reconciliation.v1 and re-drive each failed side effect (EMBED, PIN_STORE, GRAPH,
    FEED) through its stage's code: backoff with jitter, a circuit breaker per dependency, one
    entity's records in order; after PINSTREAM_RECONCILE_MAX_ATTEMPTS the record goes to
    ops.deadletter.v1 with its history. Offsets are committed once records are done or handed on."""
    from processors.reconcile_kafka import ReconciliationSource, run
    from streams.metrics import serve_metrics

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_or_exit()
    serve_metrics(settings)

    async def main() -> None:
        reconciler, producer, close = build(settings, seed)
        source = ReconciliationSource(settings, on_revoke=reconciler.forget)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            report = await run(reconciler, source, producer, stop=stop, idle_exit_s=idle_exit_s)
        finally:
            source.close()
            await close()
        outcomes = ", ".join(f"{k} {v}" for k, v in reconciler.outcomes.items())
        click.echo(f"read {report.read}, finished {report.finished} ({outcomes}), "
                   f"still held {reconciler.held()}")

    asyncio.run(main())


@reconcile.command("status")
@click.option("--group", default=None, help="Consumer group of the reconciler (default: "
              "PINSTREAM_TOPIC_PREFIX + PINSTREAM_RECONCILE_GROUP_ID).")
@reports_errors
def status_cmd(group: str | None) -> None:
    """Pending re-drives (records past the reconciler's committed offsets) and failed ones (its dead
    letters), by stage and dependency."""
    from processors.reconcile_status import reconcile_status
    from streams.registry import build_codec

    settings = settings_or_exit()
    status = reconcile_status(settings, build_codec(settings), group=group)
    table = Table("stage", "dependency", "pending", "failed")
    for stage, dependency, pending, failed in status.rows():
        table.add_row(stage, dependency, str(pending), str(failed))
    console().print(table)
    never = [p for p, offset in status.committed.items() if offset is None]
    click.echo(f"group {status.group}: {sum(status.pending.values())} pending, "
               f"{sum(status.failed.values())} failed"
               + (f", {status.undecodable} undecodable" if status.undecodable else ""))
    if never and any(status.ends.get(p) for p in never):
        err(f"group {status.group} has never committed on partitions {never}: is `pinstream reconcile "
            "run` running (same PINSTREAM_TOPIC_PREFIX and PINSTREAM_RECONCILE_GROUP_ID)?")
    if status.failed:
        err("see them with `pinstream dlq list --reason reconciliation_exhausted` and redrive with "
            "`pinstream dlq redrive`")
