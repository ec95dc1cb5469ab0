"""MicroBatcher: batches by size and by time, bounded queue backpressure, isolated failures,
timeouts, and the event loop staying responsive while a batch runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from processors.batching import MicroBatcher
from streams.errors import ProcessingError

X = TypeVar("X")


class Recorder:
    """A batch function that records batch sizes, squares numbers and fails on negatives."""

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s
        self.gate = gate

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        if self.gate is not None:
            self.gate.wait(5)
        self.sizes.append(len(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        return [ProcessingError("negative", stage="embed", reason="bad_item") if i < 0 else i * i
                for i in items]


def run(coro: Coroutine[Any, Any, X]) -> X:
    return asyncio.run(coro)


def test_flushes_by_size_when_items_arrive_together() -> None:
    fn = Recorder()

    async def main() -> list[int]:
        async with MicroBatcher(fn, max_batch=4, max_wait_ms=5_000, queue_size=16) as batcher:
            return await asyncio.gather(*(batcher.submit(i) for i in range(8)))

    started = time.perf_counter()
    assert run(main()) == [i * i for i in range(8)]
    assert time.perf_counter() - started < 2.0  # full batches never wait for the 5 s timer
    assert fn.sizes == [4, 4]
    assert len(fn.threads) == 1 and threading.current_thread().name not in fn.threads


def test_flushes_by_time_when_the_batch_is_not_full() -> None:
    fn = Recorder()

    async def main() -> tuple[list[int], float]:
        async with MicroBatcher(fn, max_batch=64, max_wait_ms=50, queue_size=16) as batcher:
            started = time.perf_counter()
            results = await asyncio.gather(*(batcher.submit(i) for i in range(3)))
            return results, time.perf_counter() - started

    results, elapsed = run(main())
    assert results == [0, 1, 4]
    assert fn.sizes == [3]
    assert 0.04 <= elapsed < 1.0


def test_one_bad_item_does_not_fail_the_others() -> None:
    fn = Recorder()

    async def main() -> list[object]:
        async with MicroBatcher(fn, max_batch=8, max_wait_ms=20) as batcher:
            return await asyncio.gather(*(batcher.submit(i) for i in (1, -1, 3)),
                                        return_exceptions=True)

    out = run(main())
    assert out[0] == 1 and out[2] == 9
    assert isinstance(out[1], ProcessingError) and out[1].reason == "bad_item"


def test_a_batch_function_that_raises_is_retried_item_by_item() -> None:
    calls: list[list[int]] = []

    def explode_on_seven(items: list[int]) -> list[int]:
        calls.append(items)
        if 7 in items:
            raise ValueError("seven")
        return items

    async def main() -> list[object]:
        async with MicroBatcher(explode_on_seven, max_batch=3, max_wait_ms=20) as batcher:
            return await asyncio.gather(*(batcher.submit(i) for i in (5, 7, 9)),
                                        return_exceptions=True)

    out = run(main())
    assert out[0] == 5 and out[2] == 9
    assert isinstance(out[1], ProcessingError) and out[1].reason == "inference_error"
    assert isinstance(out[1].__cause__, ValueError)
    assert calls == [[5, 7, 9], [5], [7], [9]]


def test_timeout_fails_the_items_of_that_batch() -> None:
    fn = Recorder(delay_s=0.5)

    async def main() -> list[object]:
        async with MicroBatcher(fn, max_batch=2, max_wait_ms=1, timeout_s=0.1) as batcher:
            return list(await asyncio.gather(batcher.submit(1), batcher.submit(2),
                                             return_exceptions=True))

    out = run(main())
    assert all(isinstance(e, ProcessingError) and e.reason == "inference_timeout" for e in out)
    assert out[0] is not out[1]


def test_bounded_queue_applies_backpressure() -> None:
    gate = threading.Event()
    fn = Recorder(gate=gate)

    async def main() -> None:
        async with MicroBatcher(fn, max_batch=1, max_wait_ms=0, queue_size=2) as batcher:
            first = asyncio.create_task(batcher.submit(0))
            await asyncio.sleep(0.05)  # the collector took item 0: the worker is blocked on it
            queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
            await asyncio.sleep(0.05)
            assert batcher.full() and batcher.depth() == 2
            blocked = asyncio.create_task(batcher.submit(3))
            await asyncio.sleep(0.05)
            assert not blocked.done()  # waiting for a slot, not queued beyond the bound
            assert batcher.depth() == 2
            gate.set()
            assert await asyncio.gather(first, *queued, blocked) == [0, 1, 4, 9]
            assert not batcher.full()

    run(main())


def test_event_loop_keeps_running_while_a_batch_computes() -> None:
    fn = Recorder(delay_s=0.3)

    async def main() -> int:
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beat = asyncio.create_task(heartbeat())
        async with MicroBatcher(fn, max_batch=1, max_wait_ms=0) as batcher:
            await batcher.submit(1)
        beat.cancel()
        return ticks

    assert run(main()) >= 10  # ~30 expected; a blocked loop would give 0


def test_stop_fails_queued_and_running_items_and_submit_needs_start() -> None:
    gate = threading.Event()
    fn = Recorder(gate=gate)

    async def main() -> None:
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=1, max_wait_ms=0)
        with pytest.raises(RuntimeError):
            await batcher.submit(1)
        await batcher.start()
        running = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)
        await batcher.stop()
        gate.set()
        for task in (running, waiting):
            with pytest.raises(ProcessingError) as caught:
                await task
            assert caught.value.reason == "shutdown"

    run(main())


def test_cancelled_caller_does_not_break_the_batch() -> None:
    fn = Recorder(delay_s=0.05)

    async def main() -> list[int]:
        async with MicroBatcher(fn, max_batch=4, max_wait_ms=30) as batcher:
            doomed = asyncio.create_task(batcher.submit(5))
            others = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
            await asyncio.sleep(0)
            doomed.cancel()
            return await asyncio.gather(*others)

    assert run(main()) == [1, 4]


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch=0)
