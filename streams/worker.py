"""The worker's runtime: the objects the faust agents and web views share, built once at start.

Entry point only (the faust app, the web views and the CLI use it; nothing else imports it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from processors.batching import MicroBatcher
from processors.embed import ImageDecoder, PinEmbedStage, make_batch_function
from processors.feed import FeedComputer, FeedParams, FeedService
from processors.feed_embeddings import LiveIndex
from processors.feed_patch import PatchParams
from processors.graph import GraphConfig, GraphProcessor
from processors.graph_reader import CachedGraphReader
from processors.graph_writer import WriterLease
from processors.index_live import IndexFollower
from processors.interactions import InteractionStage
from processors.model import EMBEDDING_DIM, Embedder
from processors.outbox import KafkaOutbox, ReconcileFn
from processors.reconcile_events import ReconciliationEmitter, settings_secrets
from processors.search import VisualSearch
from sinks.hbase import PinStore
from sinks.hbase_graph import GraphStore
from sinks.redis import FeedCache
from streams.blobs import BlobStore
from streams.codec import AvroCodec
from streams.deadletter import RawRecord
from streams.errors import ProcessingError, SinkError
from streams.events import ConsumedRecord, PinCreated, Stage
from streams.live_process import LivePatchProcess
from streams.producer import EventProducer
from streams.registry import build_codec
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    settings: Settings
    codec: AvroCodec
    embedder: Embedder
    batcher: MicroBatcher[PinCreated | Image.Image, Any]
    store: PinStore
    producer: EventProducer
    stage: PinEmbedStage
    follower: IndexFollower
    search: VisualSearch
    interactions: InteractionStage
    # The interaction stage's consumer loop, once the app started it: its figures in health().
    interaction_health: Callable[[], dict[str, Any]] | None = None
    # Plans and applies the live feed patches beside the stage (None: the stage does it).
    live: LivePatchProcess | None = None

    @classmethod
    def build(cls, settings: Settings) -> WorkerRuntime:
        codec = build_codec(settings)
        embedder = Embedder.from_settings(settings)
        blobs = BlobStore(settings.blob_dir)
        batcher: MicroBatcher[PinCreated | Image.Image, Any] = MicroBatcher(
            make_batch_function(embedder, blobs, settings), max_batch=settings.embed_max_batch,
            max_wait_ms=settings.embed_max_wait_ms, queue_size=settings.embed_queue_size,
            timeout_s=settings.embed_batch_timeout_s)
        store = PinStore.from_settings(settings)
        # Its stages flush it every batch and need only its failures (a report per graph delta
        # was ~4 % of the graph stage's loop).
        producer = EventProducer(settings, codec=codec, linger_ms=settings.worker_producer_linger_ms,
                                 failures_only=True)
        outbox = KafkaOutbox(producer, reconcile_to_kafka(producer, settings))
        decoder = (ImageDecoder(blobs, settings, threads=settings.embed_decode_threads)
                   if settings.embed_decode_threads else None)
        stage = PinEmbedStage(embedder=embedder, batcher=batcher, store=store, outbox=outbox,
                              codec=codec, decoder=decoder)
        follower = IndexFollower(settings, embedder.model_version, EMBEDDING_DIM, codec=codec,
                                model_id=embedder.model_id)
        interactions = build_interaction_stage(settings, producer, codec,
                                               LiveIndex(lambda: follower.index))
        search = VisualSearch(settings, index=lambda: follower.index, batcher=batcher, pins=store,
                              model_version=embedder.model_version, text=store,
                              trending=interactions.cache, taste=interactions.feeds.computer.taste_of)
        live = None
        if settings.feed_live_process:
            live = LivePatchProcess(settings)
            interactions.graph.on_written = live.push
            # Patches are what meets the feed SLO: when they fall behind, re-ranks give way.
            interactions.others_behind = lambda: live.behind
        return cls(settings, codec, embedder, batcher, store, producer, stage, follower, search,
                   interactions, live=live)

    async def start(self) -> None:
        if self.live is not None:
            self.live.start()
        await self.batcher.start()
        self.follower.start()
        await asyncio.to_thread(self.follower.ready.wait)
        if self.follower.error is not None:
            raise self.follower.error

    async def stop(self) -> None:
        await self.batcher.stop()
        if self.stage.decoder is not None:
            self.stage.decoder.close()
        await asyncio.to_thread(self.follower.stop)
        if self.live is not None:
            await asyncio.to_thread(self.live.stop)
        await asyncio.to_thread(self.producer.close)
        self.store.close()
        self.interactions.cache.close()

    def health(self) -> dict[str, Any]:
        index = self.follower.index
        return {
            "model_version": self.embedder.model_version,
            "ready": index is not None and self.follower.error is None
            and (self.live is None or self.live.ready),
            "index_ready": index is not None and self.follower.error is None,
            "index_pins": len(index) if index is not None else 0,
            "index_error": repr(self.follower.error) if self.follower.error else None,
            "embed_queue": self.batcher.depth(),
            "interactions": self.interaction_health() if self.interaction_health else None,
            "live_patches": self.live.health() if self.live is not None else None,
        }


def build_interaction_stage(settings: Settings, producer: EventProducer, codec: AvroCodec,
                            embeddings: LiveIndex | None = None) -> InteractionStage:
    """Graph (HBase) + feeds (Redis); pin embeddings and visually similar candidates come from
    the worker's ANN index (a feed says NO_EMBEDDINGS while none of the user's pins is in it),
    trending and cached preferences from Redis."""
    graph_store = GraphStore.from_settings(settings)
    cache = FeedCache.from_settings(settings)
    config = GraphConfig.from_settings(settings)
    graph = GraphProcessor(graph_store, config, lease=WriterLease(graph_store))
    params = FeedParams.from_settings(settings)
    # Feeds read the rows the graph processor holds (the freshest copy), HBase for the rest.
    reader = CachedGraphReader(graph_store, graph.cache) if settings.feed_graph_from_cache else None
    computer = FeedComputer(reader or graph_store, embeddings=embeddings, similar=embeddings, trending=cache,
                            preferences=cache, params=params)
    # With a live patch process, it plans and applies the patches; the stage only pushes it rows.
    patches = None if settings.feed_live_process else PatchParams.from_settings(settings)
    return InteractionStage(
        graph=graph, feeds=FeedService(computer, cache), cache=cache, producer=producer,
        emitter=ReconciliationEmitter(producer, secrets=settings_secrets(settings)), codec=codec,
        refresh_interval_s=settings.feed_refresh_interval_s,
        refresh_threads=settings.feed_refresh_threads, patches=patches,
        rerank_share=settings.feed_rerank_share, rerank_share_behind=settings.feed_rerank_share_behind,
        behind_s=settings.feed_rerank_behind_ms / 1000,
        live_announce_interval_s=settings.feed_live_announce_interval_s)


def reconcile_to_kafka(producer: EventProducer, settings: Settings) -> ReconcileFn:
    """A `ReconcileFn` publishing a Reconciliation (secrets redacted) whose payload is the
    failed pin's original record, so the reconciler can re-drive it."""
    emitter = ReconciliationEmitter(producer, secrets=settings_secrets(settings))

    def reconcile(stage: Stage, pin: PinCreated, dependency: str, error: Exception,
                  source: RawRecord) -> None:
        failure = error if isinstance(error, SinkError | ProcessingError) else ProcessingError(
            f"{type(error).__name__}: {error}", stage=str(stage), reason="unexpected")
        consumed = ConsumedRecord(source.topic, source.partition, source.offset, source.timestamp_ms,
                                  source.key, source.headers, pin)
        emitter.report(failure, stage=stage, entity_type="pin", entity_id=pin.pin_id,
                       payload=source.value, source=consumed, dependency=dependency)

    return reconcile
