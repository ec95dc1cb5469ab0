"""The faust app of `pinstream worker`: the embed agent, the feed refresh task, the web views, and
the interaction stage's own consumer loop started beside them. Entry point only: nothing imports
it but the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from typing import Any

import faust
from faust.streams import Stream
from faust.types import EventT, StreamT

from processors.graph_writer import GraphWriterFenced
from streams.deadletter import RawRecord
from streams.interaction_consumer import InteractionConsumer
from streams.metrics import freeze_heap
from streams.settings import Settings
from streams.topics import PINS_CREATED
from streams.web import register_views
from streams.worker import WorkerRuntime

log = logging.getLogger(__name__)


def broker_credentials(settings: Settings) -> Any:
    """The same SASL/SSL settings the confluent-kafka clients get, in faust's (aiokafka's) terms."""
    context = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.ssl_ca_location) if settings.ssl_ca_location else None)
        if settings.ssl_certificate_location and settings.ssl_key_location:
            password = settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None
            context.load_cert_chain(str(settings.ssl_certificate_location),
                                    str(settings.ssl_key_location), password)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username, ssl_context=context,
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
            mechanism=settings.sasl_mechanism)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def raw_from_event(event: EventT) -> RawRecord:
    message = event.message
    listed = message.headers or ()
    pairs = list(listed.items()) if isinstance(listed, dict) else list(listed)
    headers = tuple((str(k), v if isinstance(v, bytes) else str(v or "").encode()) for k, v in pairs)
    return RawRecord(topic=message.topic, partition=message.partition, offset=message.offset,
                     key=message.key, value=message.value, headers=headers,
                     timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None)


class PinstreamApp(faust.App):
    """The faust app, owning the worker runtime: built when the app starts, before any agent runs."""

    def __init__(self, settings: Settings, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pinstream_settings = settings
        self.runtime: WorkerRuntime | None = None
        self.interaction_consumer: InteractionConsumer | None = None
        self.interaction_task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        await super().on_start()
        # Model load and index catch-up take seconds: off the event loop.
        runtime = await asyncio.to_thread(WorkerRuntime.build, self.pinstream_settings)
        await runtime.start()
        self.runtime = runtime
        # Interactions are consumed by a confluent-kafka loop of their own, not a faust agent
        # (streams/interaction_consumer.py says why); built off the loop (it joins its group).
        consumer = await asyncio.to_thread(InteractionConsumer, self.pinstream_settings, runtime.interactions)
        self.interaction_consumer = consumer
        runtime.interaction_health = consumer.health
        self.interaction_task = asyncio.get_running_loop().create_task(consumer.run())
        self.interaction_task.add_done_callback(_stop_worker_when_ended)
        log.info("worker ready: %s; %d objects frozen out of garbage collection", runtime.health(),
                 freeze_heap())

    async def on_stop(self) -> None:
        task, self.interaction_task = self.interaction_task, None
        if task is not None and self.interaction_consumer is not None:
            self.interaction_consumer.stop()  # ends after the batch in flight, then leaves the group
            with contextlib.suppress(Exception):
                await task
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            await runtime.stop()
        await super().on_stop()


def _stop_worker_when_ended(task: asyncio.Task[None]) -> None:
    """The interaction loop ends only when asked to, or on an error it cannot get past: then the
    worker stops the way SIGTERM stops it (in-flight batches of the other stages finish)."""
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, GraphWriterFenced):
        # A newer worker writes the graph now: nothing more from this cache.
        log.critical("%s", exc)
    elif exc is not None:
        log.critical("interaction consumer stopped: %r", exc, exc_info=exc)
    else:
        return
    os.kill(os.getpid(), signal.SIGTERM)


def create_app(settings: Settings) -> PinstreamApp:
    # "kafka" names faust's transport; TLS and SASL travel in broker_credentials (there is no
    # "kafka+ssl" transport: such a URL fails when the worker starts).
    app = PinstreamApp(
        settings, settings.worker_group_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        key_serializer="raw", value_serializer="raw",
        # Topics come from the catalogue (`pinstream topics apply`), never from a worker's guess.
        topic_allow_declare=False, topic_disable_leader=True,
        store="memory://", web_host=settings.web_host, web_port=settings.web_port,
        web_bind=settings.web_host, producer_acks=-1, stream_buffer_maxsize=256,
    )
    created = app.topic(settings.topic(PINS_CREATED.name), key_serializer="raw", value_serializer="raw")

    @app.agent(created)
    async def embed_pins(stream: StreamT[Any]) -> None:
        assert isinstance(stream, Stream)  # take_events lives on the concrete stream
        # take_events acknowledges a batch only after this body has handled it (stored,
        # published, dead-lettered or reconciled), so offsets never pass unfinished work.
        async for events in stream.take_events(settings.embed_max_batch * 2,
                                               within=max(settings.embed_max_wait_ms / 1000, 0.01)):
            runtime = app.runtime
            if runtime is None:  # agents start after on_start; a stop may race a last batch
                raise RuntimeError("worker runtime not running")
            report = await runtime.stage.process([raw_from_event(e) for e in events])
            if report.dead_lettered or report.reconciliations:
                log.info("embed batch: %s", report)

    @app.task
    async def refresh_feeds() -> None:
        # Woken by each interaction batch (feeds refreshed right after it, not at the next tick),
        # and at least every half interval for users whose coalescing interval has passed since.
        while True:
            runtime = app.runtime
            if runtime is None:
                await asyncio.sleep(0.1)
            else:
                await runtime.interactions.refresh_when_woken(settings.feed_refresh_interval_s / 2)

    @app.timer(interval=15.0)
    async def watch_pools() -> None:
        # A borrow held too long is reported on the next borrow anyway; an idle worker must
        # still notice a connection that never came back (the reference incident).
        if app.runtime is not None:
            for leak in app.runtime.store.pool.check_leaks():
                log.warning("%s", leak.format())

    register_views(app, lambda: app.runtime)
    return app
