"""The reconciler on the real stack: a worker turns an HBase outage (pins and graph edges) and a
Redis outage (feeds) into reconciliation records; `pinstream reconcile run`, started while the
dependency is still down, waits behind its breaker and lands every side effect once it is back;
running it over the same records again changes nothing; an EMBED record re-embeds a pin stored
without features."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
import redis

from processors.graph import GraphConfig, batch_recompute, graph_differences, graph_of
from processors.reconcile import RECONCILER_REASONS
from processors.reconcile_events import build_reconciliation
from sinks.hbase import PinStore
from sinks.hbase_graph import GraphStore
from streams import stack
from streams.codec import AvroCodec
from streams.consumer import EventConsumer
from streams.dlq import read_dead_letters
from streams.errors import ProcessingError
from streams.events import (
    Event,
    PinCreated,
    PinEmbedding,
    PinInteraction,
    Reconciliation,
    Stage,
    utc_now,
)
from streams.localworker import LocalWorker, free_port
from streams.producer import EventProducer, PinProducer
from streams.settings import Settings
from streams.topics import PINS_CREATED, PINS_EMBEDDINGS, PINS_INTERACTIONS, RECONCILIATION
from tests.integration.test_pin_creation_path import _images, _publish_pins

pytestmark = pytest.mark.integration

RECONCILE_TIMEOUT_S = 420


@dataclass
class PrivateRedis:
    """A redis-server of the test's own on a free port, so stopping it leaves the shared one up."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not on PATH (the local stack needs it too)"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(self.url, socket_timeout=1).ping()
                return
            except redis.RedisError:
                assert time.monotonic() < deadline, "private redis-server did not answer"
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, private_redis: PrivateRedis) -> Iterator[LocalWorker]:
    running = LocalWorker(
        tmp_path_factory.mktemp("worker"), embed_threads=2, redis_url=private_redis.url,
        feed_refresh_interval_s=0.5, reconcile_max_attempts=60, reconcile_backoff_base_s=0.5,
        reconcile_backoff_cap_s=3, reconcile_breaker_failures=3, reconcile_breaker_open_s=3)
    with running:
        yield running


def start_reconciler(worker: LocalWorker, *, idle_s: float = 10, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "reconcile", "run", "--until-idle", str(idle_s), "--seed", "1"],
        env=worker.env | env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str]) -> dict[str, int]:
    """Wait for a reconciler run; its outcome counts from the summary line."""
    out, errors = process.communicate(timeout=RECONCILE_TIMEOUT_S)
    assert process.returncode == 0, errors[-3000:]
    summary = out.strip().splitlines()[-1]
    counts = {name: int(n) for n, name in
              ((m.group(2), m.group(1)) for m in re.finditer(r"(\w+) (\d+)", summary))}
    assert "still held 0" in summary, summary
    return counts


def read_all(settings: Settings, topic: str, idle: float = 3.0) -> list[Event]:
    consumer = EventConsumer(settings, [settings.topic(topic)], group_id=f"g-{uuid.uuid4()}",
                             on_decode_error=lambda raw, exc: None)
    try:
        return [record.value for record in consumer.iter(idle_timeout=idle)]
    finally:
        consumer.close()


def wait_for_reconciliations(settings: Settings, done: Callable[[list[Reconciliation]], bool],
                             timeout: float = 120.0) -> list[Reconciliation]:
    deadline = time.monotonic() + timeout
    while True:
        records = [r for r in read_all(settings, RECONCILIATION.name) if isinstance(r, Reconciliation)]
        if done(records):
            return records
        assert time.monotonic() < deadline, [(r.stage, r.entity_id) for r in records]
        time.sleep(1)


def interact(settings: Settings, rows: list[tuple[str, str, str, str | None]]) -> None:
    start = datetime.now(UTC) - timedelta(minutes=5)
    with PinProducer(settings) as producer:
        for i, (user, pin, action, board) in enumerate(rows):
            producer.interact(user_id=user, pin_id=pin, action=action, session_id=f"s-{user}",
                              board_id=board, event_time=start + timedelta(seconds=i))


def graph_problems(settings: Settings) -> list[str]:
    """Differences between the graph in HBase and a batch recomputation from the topics."""
    events = [e for topic in (PINS_CREATED.name, PINS_INTERACTIONS.name) for e in read_all(settings, topic)
              if isinstance(e, PinInteraction | PinCreated)]
    config = GraphConfig.from_settings(settings)
    store = GraphStore.from_settings(settings, create_tables=False)
    try:
        stored = graph_of(store.scan())
    finally:
        store.close()
    assert stored, "no graph rows at all"
    return graph_differences(batch_recompute(events, config), stored, config.half_life_ms)


def reconciler_dead_letters(settings: Settings) -> list[str]:
    return [f"{le.id} {le.reason}: {le.header('pinstream.dlq.error')}" for le in read_dead_letters(settings)
            if le.reason in RECONCILER_REASONS]


def test_hbase_outage_pins_and_graph_edges_land_once_thrift_is_back(worker: LocalWorker) -> None:
    settings = worker.settings
    stack.down(["thrift"])
    reconciler = None
    try:
        pins = _publish_pins(settings, _images(3, seed=31), "outage-")
        interact(settings, [("bob", p.pin_id, "save", "b-shared") for p in pins]
                 + [("bob", pins[0].pin_id, "closeup", None), ("amy", pins[1].pin_id, "save", "b-shared")])

        def all_reported(records: list[Reconciliation]) -> bool:
            stored = {r.entity_id for r in records if r.stage is Stage.PIN_STORE}
            return stored >= {p.pin_id for p in pins}

        records = wait_for_reconciliations(settings, all_reported)
        assert all(r.dependency == "hbase" for r in records)
        # The graph stage holds its batches while HBase is unreachable instead (see
        # processors/interactions.py): its rows' applied offsets need each partition in order.
        assert not [r for r in records if r.stage is Stage.GRAPH]
        reconciler = start_reconciler(worker)
        time.sleep(10)  # it re-drives, fails, opens its breakers and waits
        assert reconciler.poll() is None, reconciler.communicate()[1][-3000:]
    finally:
        stack.up(["thrift"])
    assert reconciler is not None
    counts = finish(reconciler)
    assert counts["dead_lettered"] == 0 and counts["done"] >= len(pins), counts
    assert not reconciler_dead_letters(settings)

    store = PinStore.from_settings(settings, create_tables=False)
    rows = store.get_pins([p.pin_id for p in pins])
    store.close()
    assert set(rows) == {p.pin_id for p in pins}
    for pin in pins:
        row = rows[pin.pin_id]
        assert row.title == pin.title and row.pending_embedding is None
        assert row.embedding is not None and row.embedding.shape == (1280,)
    assert graph_problems(settings) == []  # every edge exactly once


def test_re_driving_the_same_records_again_changes_nothing(worker: LocalWorker) -> None:
    settings = worker.settings
    before = graph_problems(settings)
    # Another group reads the reconciliation topic from its start: every record re-driven again.
    counts = finish(start_reconciler(worker, idle_s=5, PINSTREAM_RECONCILE_GROUP_ID=f"again-{uuid.uuid4()}"))
    assert counts["done"] == 0 and counts["dead_lettered"] == 0, counts
    assert counts["already_applied"] >= 3, counts  # the three pins
    assert before == [] and graph_problems(settings) == []


def test_redis_outage_feeds_are_rewritten_once_redis_is_back(worker: LocalWorker,
                                                            private_redis: PrivateRedis) -> None:
    settings = worker.settings
    cache = redis.Redis.from_url(private_redis.url)
    private_redis.stop()
    try:
        rows: list[tuple[str, str, str, str | None]] = [("dave", f"q{i}", "save", "b-q") for i in range(4)]
        interact(settings, [*rows, ("carol", "q0", "save", "b-q")])
        records = wait_for_reconciliations(
            settings, lambda rs: any(r.stage is Stage.FEED and r.entity_id == "carol" for r in rs))
        assert {r.dependency for r in records if r.stage is Stage.FEED} == {"redis"}
        reconciler = start_reconciler(worker)
        time.sleep(5)
        assert reconciler.poll() is None
    finally:
        private_redis.start()  # empty: whatever feed it holds next, the reconciler wrote
    counts = finish(reconciler)
    assert counts["done"] >= 2 and counts["dead_lettered"] == 0, counts
    key = f"{settings.topic_prefix}feed:carol"  # feed keys carry the namespace
    carol = {bytes(member).decode() for member in cast(list[bytes], cache.zrange(key, 0, -1))}
    assert {"q1", "q2", "q3"} <= carol, carol
    assert "q0" not in carol  # already saved by carol
    assert cache.ttl(key) > 0


def test_an_embed_record_re_embeds_a_pin_stored_without_features(worker: LocalWorker) -> None:
    settings = worker.settings
    (pin,) = _publish_pins(settings, _images(1, seed=41), "unembedded-")
    # Wait until the worker stored and embedded it, then take its features away as a model
    # failure would have left it: stored, marked pending, an EMBED record on the topic.
    store = PinStore.from_settings(settings, create_tables=False)
    deadline = time.monotonic() + 120
    while (row := store.get_pins([pin.pin_id]).get(pin.pin_id)) is None or row.embedding is None:
        assert time.monotonic() < deadline, "the worker never stored the pin"
        time.sleep(1)
    # A newer event of the pin (its cells win over the embedding's), marked pending as the embed
    # stage marks a pin whose inference failed.
    later = PinCreated(**{**pin.to_record(), "tags": tuple(pin.tags), "event_id": uuid.uuid4(),
                          "event_time": utc_now() + timedelta(seconds=1)})
    store.write_pins([later])
    store.mark_pending_embedding(pin.pin_id, "model_error", at=later.event_time)
    store_row = store.get_pins([pin.pin_id])[pin.pin_id]
    assert store_row.pending_embedding == "model_error"
    codec = AvroCodec()
    record = build_reconciliation(
        ProcessingError("inference failed: timed out", stage="embed", reason="model_error"),
        stage=Stage.EMBED, entity_type="pin", entity_id=pin.pin_id, payload=codec.encode_event(later),
        dependency="model")
    producer = EventProducer(settings)
    producer.send_event(RECONCILIATION, pin.pin_id, record)
    producer.close()

    counts = finish(start_reconciler(worker, idle_s=5))
    assert counts["done"] == 1 and counts["dead_lettered"] == 0, counts
    row = store.get_pins([pin.pin_id])[pin.pin_id]
    store.close()
    assert row.pending_embedding is None and row.embedding is not None
    assert row.embedding.shape == (1280,)
    embeddings = [e for e in read_all(settings, PINS_EMBEDDINGS.name)
                  if isinstance(e, PinEmbedding) and e.pin_id == pin.pin_id]
    assert any(e.source_event_id == later.event_id for e in embeddings)
