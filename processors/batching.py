"""A micro-batcher for asyncio code (faust agents): bounded queue, flush by size or wait time,
the batch function run in one worker thread so the event loop keeps heartbeating.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from processors import embed_metrics
from streams.errors import ProcessingError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# The batch function returns one entry per item: its result, or the exception for that item.
BatchFunction = Callable[[list[T]], Sequence["R | BaseException"]]


@dataclass(slots=True)
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    queued_at: float


class MicroBatcher(Generic[T, R]):
    """Groups `submit`ted items into batches of up to `max_batch`, flushed `max_wait_ms` after
    the batch's first item at the latest, and runs `fn` on them in a single worker thread.

    `submit` waits for a free slot when `queue_size` items are already waiting (backpressure);
    each caller gets its own item's result or exception; a batch that runs longer than
    `timeout_s` fails its items with ProcessingError(reason="inference_timeout").
    """

    def __init__(self, fn: BatchFunction[T, R], *, max_batch: int = 8, max_wait_ms: float = 10.0,
                 queue_size: int = 64, timeout_s: float = 10.0, name: str = "embed",
                 stage: str = "embed") -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_ms < 0 or timeout_s <= 0:
            raise ValueError("max_batch and queue_size must be >= 1, max_wait_ms >= 0, timeout_s > 0")
        self._fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.timeout_s = timeout_s
        self.name = name
        self.stage = stage
        self._queue_size = queue_size
        self._queue: asyncio.Queue[_Pending[T, R]] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._running: list[_Pending[T, R]] = []
        self._depth = embed_metrics.QUEUE_DEPTH.labels(name)
        self._sizes = embed_metrics.BATCH_SIZE.labels(name)
        self._wait = embed_metrics.BATCH_SECONDS.labels(name, "wait")
        self._run = embed_metrics.BATCH_SECONDS.labels(name, "run")
        self._timeouts = embed_metrics.BATCH_TIMEOUTS.labels(name)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the collector task and the worker thread (idempotent)."""
        if self._runner is not None:
            return
        self._queue = asyncio.Queue(self._queue_size)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{self.name}")
        self._runner = asyncio.create_task(self._collect(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Stop collecting; items queued or in the running batch fail with reason "shutdown"."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        left = list(self._running)
        if self._queue is not None:
            while not self._queue.empty():
                left.append(self._queue.get_nowait())
            self._depth.set(0)
        for pending in left:
            _settle(pending.future, ProcessingError(
                "the batcher stopped before this item completed", stage=self.stage,
                reason="shutdown"))
        if self._executor is not None:
            # A batch still running (timed out) is left to finish; we do not wait for it.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def __aenter__(self) -> MicroBatcher[T, R]:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- producer side ---------------------------------------------------------------------

    async def submit(self, item: T) -> R:
        """Queue `item` (waiting while the queue is full) and return its result, or raise the
        exception its batch produced for it.
        """
        if self._queue is None or self._runner is None:
            raise RuntimeError("MicroBatcher.submit() before start()")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(item, future, time.perf_counter()))
        self._depth.set(self._queue.qsize())
        return await future

    def depth(self) -> int:
        """Items waiting in the queue (not counting the batch that is running)."""
        return self._queue.qsize() if self._queue is not None else 0

    def full(self) -> bool:
        """True when the next submit would wait: a consumer should pause its source."""
        return self._queue is not None and self._queue.full()

    # --- consumer side ---------------------------------------------------------------------

    async def _collect(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            first = await queue.get()
            batch = [first]
            deadline = first.queued_at + self.max_wait_s
            while len(batch) < self.max_batch:
                # Items that piled up while the previous batch ran are taken without waiting.
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            self._depth.set(queue.qsize())
            live = [p for p in batch if not p.future.done()]  # callers may have been cancelled
            if live:
                await self._run_batch(live)

    async def _run_batch(self, batch: list[_Pending[T, R]]) -> None:
        assert self._executor is not None
        started = time.perf_counter()
        self._wait.observe(started - batch[0].queued_at)
        self._sizes.observe(len(batch))
        items = [p.item for p in batch]
        self._running = batch
        loop = asyncio.get_running_loop()
        try:
            outcomes = await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._call_isolated, items), self.timeout_s)
        except TimeoutError:
            self._timeouts.inc()
            log.warning("batcher %s: a batch of %d ran past %.1f s", self.name, len(batch),
                        self.timeout_s)
            outcomes = [ProcessingError(f"batch inference ran past {self.timeout_s} s",
                                        stage=self.stage, reason="inference_timeout")
                        for _ in batch]  # one instance each: tracebacks must not be shared
        self._running = []
        self._run.observe(time.perf_counter() - started)
        for pending, outcome in zip(batch, outcomes, strict=True):
            _settle(pending.future, outcome)

    def _call_isolated(self, items: list[T]) -> Sequence[R | BaseException]:
        """Run the batch; if the whole call fails, run each item alone so that only the item
        that breaks it fails (runs in the worker thread).
        """
        try:
            outcomes = self._fn(items)
            if len(outcomes) != len(items):
                raise RuntimeError(f"batch function returned {len(outcomes)} results for "
                                   f"{len(items)} items")
            return outcomes
        except Exception as exc:
            if len(items) == 1:
                return [_as_processing_error(exc, self.stage)]
            log.warning("batcher %s: a batch of %d failed (%s); retrying items one by one",
                        self.name, len(items), exc)
            return [self._call_isolated([item])[0] for item in items]


def _as_processing_error(exc: Exception, stage: str) -> BaseException:
    if isinstance(exc, ProcessingError):
        return exc
    error = ProcessingError(f"batch function failed: {exc.__class__.__name__}: {exc}", stage=stage,
                            reason="inference_error")
    error.__cause__ = exc
    return error


def _settle(future: asyncio.Future[R], outcome: R | BaseException) -> None:
    if future.done():  # the caller gave up (cancelled): nobody is waiting for this result
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
