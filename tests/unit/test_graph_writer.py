"""The single graph writer: a newer writer's epoch fences the older one before its next write,
and a new writer's first write waits out the grace period after its claim."""

from __future__ import annotations

import pytest

from processors.graph import GraphProcessor
from processors.graph_writer import GraphWriterFenced, WriterLease
from streams.events import InteractionAction, PinInteraction
from streams.metrics import REGISTRY
from tests.unit.test_graph import CONFIG, T0, MemoryStore


class EpochStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0

    def claim_writer(self) -> int:
        self.epoch += 1
        return self.epoch

    def writer_epoch(self) -> int:
        return self.epoch


def save(user: str, pin: str) -> PinInteraction:
    return PinInteraction(user_id=user, pin_id=pin, action=InteractionAction.SAVE, session_id="s",
                          board_id="b1", event_time=T0)


def lease(store: EpochStore) -> WriterLease:
    return WriterLease(store, grace_s=0.0)


def test_the_newest_writer_fences_the_older_one_before_it_writes() -> None:
    store = EpochStore()
    old = GraphProcessor(store, CONFIG, lease=lease(store))
    old.process([save("u1", "p1")])
    assert "user:u1" in store.rows
    new = GraphProcessor(store, CONFIG, lease=lease(store))

    old.apply([save("u2", "p2")])
    with pytest.raises(GraphWriterFenced) as fenced:
        old.flush()
    assert (fenced.value.held, fenced.value.newest) == (1, 2)
    assert "user:u2" not in store.rows  # nothing written from the fenced cache
    assert REGISTRY.get_sample_value("pinstream_graph_writer_epoch") == 0

    new.process([save("u3", "p3")])
    assert "user:u3" in store.rows
    assert REGISTRY.get_sample_value("pinstream_graph_writer_epoch") == 2


def test_a_flush_with_nothing_to_write_does_not_ask_the_store() -> None:
    store = EpochStore()
    processor = GraphProcessor(store, CONFIG, lease=lease(store))
    store.epoch = 7  # fenced, but it writes nothing
    assert processor.flush() == 0


def test_the_first_write_waits_out_the_grace_period_after_the_claim() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    writer = WriterLease(EpochStore(), grace_s=5.0, clock=lambda: now[0], sleep=sleep)
    now[0] += 2.0
    writer.check()
    writer.check()
    assert slept == [3.0]
