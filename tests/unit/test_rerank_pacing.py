"""Full re-ranks share the interpreter with interaction batches: they wait while a batch is being
processed, and pause after each feed so they take at most `rerank_share` of the time."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from processors.interactions import InteractionStage
from streams.codec import AvroCodec
from streams.settings import load_settings


def _stage(share: float) -> InteractionStage:
    unused: Any = object()  # the pacer touches none of the stage's stores
    producer: Any = SimpleNamespace(settings=load_settings())  # for the dead-letter topic's name
    return InteractionStage(graph=unused, feeds=unused, cache=unused, producer=producer, emitter=unused,
                            codec=AvroCodec(), refresh_interval_s=1.0, rerank_share=share)


def _busy(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def _timed(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def test_after_each_feed_a_re_rank_pauses_for_the_rest_of_its_share() -> None:
    pacer = _stage(0.25)._rerank_pacer()
    assert _timed(pacer) < 0.05  # nothing computed yet: no pause
    _busy(0.05)  # a feed that took 50 ms: 150 ms of pause keeps re-ranks at a quarter
    assert 0.13 <= _timed(pacer) < 0.5


def test_a_share_of_one_never_pauses() -> None:
    pacer = _stage(1.0)._rerank_pacer()
    pacer()
    _busy(0.05)
    assert _timed(pacer) < 0.03


def test_a_re_rank_waits_while_an_interaction_batch_is_processed() -> None:
    stage = _stage(1.0)
    pacer = stage._rerank_pacer()
    stage._between_batches.clear()  # a batch is being processed
    threading.Timer(0.2, stage._between_batches.set).start()
    assert 0.15 <= _timed(pacer) < 2.0


def _stage_with_a_share_behind(share: float) -> InteractionStage:
    unused: Any = object()
    producer: Any = SimpleNamespace(settings=load_settings())
    return InteractionStage(graph=unused, feeds=unused, cache=unused, producer=producer, emitter=unused,
                            codec=AvroCodec(), refresh_interval_s=1.0, rerank_share=1.0,
                            rerank_share_behind=share, behind_s=0.1)


def test_while_the_stage_is_behind_re_ranks_take_the_smaller_share() -> None:
    stage = _stage_with_a_share_behind(0.2)
    pacer = stage._rerank_pacer()
    pacer()
    _busy(0.03)
    assert _timed(pacer) < 0.02  # keeping up: a share of one, no pause
    stage.behind = True  # a batch's oldest record waited past behind_s
    _busy(0.03)
    assert 0.1 <= _timed(pacer) < 0.5  # 30 ms of feed, 120 ms of pause: a fifth


def test_within_a_re_rank_the_pause_waits_while_a_batch_is_processed() -> None:
    stage = _stage(1.0)
    assert stage._rerank_pause() == 0.0  # no batch: no wait
    stage._between_batches.clear()
    threading.Timer(0.15, stage._between_batches.set).start()
    assert 0.1 <= stage._rerank_pause() < 2.0  # returns what it waited


def test_while_the_live_patch_process_is_behind_re_ranks_take_the_smaller_share_too() -> None:
    stage = _stage_with_a_share_behind(0.2)
    live_behind = [False]
    stage.others_behind = lambda: live_behind[0]
    pacer = stage._rerank_pacer()
    pacer()
    _busy(0.03)
    assert _timed(pacer) < 0.02
    live_behind[0] = True  # the stage keeps up; the live patch process does not
    _busy(0.03)
    assert 0.1 <= _timed(pacer) < 0.5
