"""The HBase pin store against the real HBase through Thrift1: tables, round trips, batching,
newest-wins idempotent writes, and failures that surface as SinkError without leaking the pool."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import happybase
import numpy as np
import pytest

from sinks.hbase import PINS_TABLE, TABLE_FAMILIES, PinStore, hbase_pool, millis
from sinks.pool import PoolConfig
from streams.errors import SinkError
from streams.events import PinCreated, PinEmbedding, utc_now
from streams.metrics import REGISTRY
from streams.settings import Settings
from streams.stack import down, status, up

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DIM = 1280


@pytest.fixture
def settings(stack_settings: Settings) -> Settings:
    """The stack's settings with a table prefix of this test's own (dropped afterwards)."""
    stack_dir = stack_settings.stack_dir
    return stack_settings.model_copy(update={
        "hbase_table_prefix": f"it{uuid.uuid4().hex[:12]}",
        "stack_dir": stack_dir if stack_dir.is_absolute() else REPO_ROOT / stack_dir,
    })


@pytest.fixture
def store(settings: Settings) -> Iterator[PinStore]:
    pin_store = PinStore.from_settings(settings, timeout_s=5.0)
    yield pin_store
    pin_store.close()
    _drop_tables(settings)


def _drop_tables(settings: Settings) -> None:
    conn = happybase.Connection(settings.hbase_host, settings.hbase_port, timeout=30_000,
                                table_prefix=settings.hbase_table_prefix)
    try:
        for name in conn.tables():
            conn.delete_table(name, disable=True)
    finally:
        conn.close()


def _raw_table(settings: Settings) -> happybase.Table:
    conn = happybase.Connection(settings.hbase_host, settings.hbase_port, timeout=10_000,
                                table_prefix=settings.hbase_table_prefix)
    return conn.table(PINS_TABLE)


def make_pin(pin_id: str, **fields: object) -> PinCreated:
    values: dict[str, object] = {"pin_id": pin_id, "user_id": "u1", "board_id": "b1",
                                 "title": f"title {pin_id}", "description": "a photo",
                                 "link": "https://example.com/x", "tags": ("cats", "sofa"),
                                 "image_ref": f"sha256:{pin_id}"}
    values.update(fields)
    return PinCreated(**values)  # type: ignore[arg-type]


def make_embedding(pin: PinCreated, seed: int = 0, **fields: object) -> PinEmbedding:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    values: dict[str, object] = {"pin_id": pin.pin_id, "source_event_id": pin.event_id,
                                 "model_id": "efficientnet-lite0", "model_version": "1",
                                 "vector": tuple(vector.tolist())}
    values.update(fields)
    return PinEmbedding(**values)  # type: ignore[arg-type]


def test_tables_are_created_once_with_their_families(store: PinStore, settings: Settings) -> None:
    store.ensure_tables()
    again = PinStore.from_settings(settings)  # a second worker starting on the same tables
    again.close()

    conn = happybase.Connection(settings.hbase_host, settings.hbase_port,
                                table_prefix=settings.hbase_table_prefix)
    assert sorted(conn.tables()) == [b"graph", b"pins", b"writers"] == sorted(
        name.encode() for name in TABLE_FAMILIES)
    for name, families in TABLE_FAMILIES.items():
        assert {f.decode().rstrip(":") for f in conn.table(name).families()} == set(families)
    conn.close()


def test_pins_and_embeddings_round_trip(store: PinStore) -> None:
    pins = [make_pin(f"p{i}") for i in range(3)]
    embeddings = [make_embedding(pin, seed=i) for i, pin in enumerate(pins)]
    store.write_batch([*pins, *embeddings])

    found = store.get_pins([pin.pin_id for pin in pins])

    assert sorted(found) == ["p0", "p1", "p2"]
    for pin, embedding in zip(pins, embeddings, strict=True):
        record = found[pin.pin_id]
        assert (record.title, record.description, record.board_id, record.user_id) == (
            pin.title, pin.description, pin.board_id, pin.user_id)
        assert (record.link, record.tags, record.image_ref) == (pin.link, pin.tags, pin.image_ref)
        assert record.event_id == pin.event_id and record.event_time == pin.event_time
        assert record.embedding is not None and record.embedding.dtype == np.float32
        assert np.array_equal(record.embedding, np.asarray(embedding.vector, dtype=np.float32))
        assert (record.model_id, record.model_version) == ("efficientnet-lite0", "1")
        assert record.pending_embedding is None

    light = store.get_pins(["p0"], with_embedding=False)["p0"]
    assert light.embedding is None and light.model_version == "1"


def test_batches_span_several_round_trips(settings: Settings) -> None:
    store = PinStore.from_settings(settings, rows_per_rpc=7)
    try:
        shared_time = utc_now()
        same_time = [make_pin(f"s{i}", event_time=shared_time) for i in range(50)]
        distinct = [make_pin(f"d{i}", event_time=shared_time + timedelta(milliseconds=i))
                    for i in range(20)]
        store.write_pins(same_time + distinct)
        store.write_embeddings([make_embedding(pin, seed=i) for i, pin in enumerate(same_time)])

        found = store.get_pins([pin.pin_id for pin in same_time + distinct])
        assert len(found) == 70
        assert all(found[pin.pin_id].embedding is not None for pin in same_time)
    finally:
        store.close()
        _drop_tables(settings)


def test_writing_the_same_event_twice_gives_the_same_row(store: PinStore, settings: Settings) -> None:
    pin = make_pin("p1")
    store.write_pins([pin])
    first = store.get_pins(["p1"])
    store.write_pins([pin, pin])

    assert store.get_pins(["p1"]) == first
    row = _raw_table(settings).row(b"p1", include_timestamp=True)
    assert {stamp for _, stamp in row.values()} == {millis(pin.event_time)}


def test_an_older_event_never_overwrites_a_newer_one(store: PinStore) -> None:
    newer = make_pin("p1", title="edited", link=None, tags=())
    older = make_pin("p1", title="original", event_time=newer.event_time - timedelta(seconds=30))
    store.write_pins([newer])
    store.write_pins([older])  # a redelivery of the original after the edit
    store.write_pins([older, newer, older])  # and both in one batch, in any order

    record = store.get_pins(["p1"])["p1"]
    assert (record.title, record.event_id) == ("edited", newer.event_id)
    assert record.link is None and record.tags == ()  # no leftover cells of the older event


def test_an_unknown_pin_is_absent(store: PinStore) -> None:
    store.write_pins([make_pin("known")])
    assert list(store.get_pins(["missing", "known", "also-missing"])) == ["known"]
    assert store.get_pins([]) == {}


def test_pending_embedding_mark_is_superseded_by_a_later_embedding(store: PinStore) -> None:
    pin = make_pin("p1")
    store.write_pins([pin])
    store.mark_pending_embedding("p1", "inference timeout", at=pin.event_time)

    pending = store.get_pins(["p1"])["p1"]
    assert pending.pending_embedding == "inference timeout" and pending.embedding is None

    store.write_embeddings([make_embedding(pin)])
    embedded = store.get_pins(["p1"])["p1"]
    assert embedded.pending_embedding is None and embedded.embedding is not None


def test_delete_removes_the_pin_but_not_a_newer_event(store: PinStore) -> None:
    pin = make_pin("p1")
    store.write_pins([pin])
    store.delete_pin("p1", at=pin.event_time + timedelta(seconds=1))
    store.write_pins([pin])  # a replay of the deleted pin stays deleted
    assert store.get_pins(["p1"]) == {}

    recreated = make_pin("p1", title="again", event_time=pin.event_time + timedelta(seconds=2))
    store.write_pins([recreated])
    assert store.get_pins(["p1"])["p1"].title == "again"


def test_a_server_that_never_answers_is_a_sink_error_not_a_hang() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, then never says a word
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    name = f"hbase-blackhole-{uuid.uuid4().hex[:8]}"
    pool = hbase_pool("127.0.0.1", listener.getsockname()[1], "blackhole",
                      PoolConfig(name, "hbase", max_size=2, acquire_timeout_s=1.0), timeout_s=0.5)
    store = PinStore(pool)
    try:
        started = time.monotonic()
        with pytest.raises(SinkError) as caught:
            store.write_pins([make_pin("p1")])
        assert time.monotonic() - started < 3.0
        assert caught.value.dependency == "hbase" and caught.value.retry_after
        assert "timed out" in str(caught.value)
        assert pool.stats().in_use == 0 and pool.stats().idle == 0  # discarded, not pooled
    finally:
        store.close()
        listener.close()
        for conn in accepted:
            conn.close()


def test_thrift_stopped_is_a_sink_error_and_writes_resume_once_it_is_back(
        store: PinStore, settings: Settings) -> None:
    if not all(row.healthy for row in status(["thrift"], settings=settings)):
        pytest.fail("the Thrift server is not healthy before the test")
    pool_name = store.pool.config.name
    leaks_before = REGISTRY.get_sample_value("pinstream_pool_leaks_total", {"pool": pool_name}) or 0
    store.write_pins([make_pin("before")])

    try:
        down(["thrift"], settings=settings)
        for attempt in range(3):  # the pooled connection, then fresh connects: all fail fast
            started = time.monotonic()
            with pytest.raises(SinkError) as caught:
                store.write_pins([make_pin(f"during{attempt}")])
            assert time.monotonic() - started < 10.0
            assert caught.value.dependency == "hbase"
            assert caught.value.retry_after is not None and caught.value.retry_after > 0
            assert store.pool.stats().in_use == 0  # the failed connection was not kept
    finally:
        up(["thrift"], settings=settings)

    # Same process, same store: the pool replaces its dead connections by itself.
    store.write_pins([make_pin("after")])
    assert sorted(store.get_pins(["before", "during0", "after"])) == ["after", "before"]
    assert store.pool.stats().in_use == 0
    leaks_after = REGISTRY.get_sample_value("pinstream_pool_leaks_total", {"pool": pool_name}) or 0
    assert leaks_after == leaks_before
