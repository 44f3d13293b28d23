"""The dynamic batcher: one bounded queue of texts, one worker task that owns the predictor.

Requests put their texts on an asyncio queue and await a future. The worker takes requests off the queue until
it holds `max_batch` texts (a request with more texts is split across batches) or, while the server is under
load, until `max_wait_ms` have passed; then it runs one predictor call in its own thread, so the event loop
keeps accepting requests meanwhile, and resolves each request's future with its share of the results.

Backpressure: the queue holds at most `max_queue` texts; `submit` refuses more at once with `QueueFull` (the
request was never queued, so nothing of it runs). A request whose caller stopped waiting (a timeout) is
skipped when the worker reaches it, and its results are dropped if its batch was already running.
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

RunBatch = Callable[[list[str]], list[Any]]  # texts -> a result per text, in order (in the model thread)


class QueueFull(Exception):
    """The queue cannot take these texts now; `retry_after_s` is an estimate of when it could."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class _Request:
    texts: list[str]
    future: asyncio.Future
    enqueued_at: float
    results: list[Any] = field(default_factory=list)
    taken: int = 0  # texts handed to batches so far
    answered: int = 0  # texts whose results are in

    def __post_init__(self) -> None:
        self.results = [None] * len(self.texts)

    @property
    def waiting(self) -> int:
        return len(self.texts) - self.taken


@dataclass
class BatcherStats:
    """Hooks the app's metrics listen on; each is called in the event loop's thread."""

    on_batch: Callable[[int, float], None] = lambda size, seconds: None
    on_queue_time: Callable[[float], None] = lambda seconds: None
    on_depth: Callable[[int], None] = lambda texts: None


class DynamicBatcher:
    def __init__(self, run_batch: RunBatch, *, max_batch: int = 16, max_wait_ms: float = 5.0,
                 max_queue: int = 256, stats: BatcherStats | None = None):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be at least 1 and max_wait_ms at least 0")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.stats = stats or BatcherStats()
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._queued_texts = 0  # accepted and not yet in a batch: what max_queue bounds
        self._carry: _Request | None = None  # a request split across batches, partly taken
        self._under_load = False
        self._batch_seconds = 0.0  # recent batch time (moving average), for Retry-After
        # one thread: the predictor is called by nobody else, never from two threads at once
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task: asyncio.Task | None = None

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    def start(self) -> asyncio.Task:
        self._task = asyncio.get_running_loop().create_task(self._work(), name="dynamic-batcher")
        return self._task

    async def stop(self, reason: str = "the server is shutting down") -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        pending = [self._carry] if self._carry else []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for request in pending:
            if not request.future.done():
                request.future.set_exception(RuntimeError(reason))
        self._executor.shutdown(wait=True)

    async def submit(self, texts: Sequence[str]) -> list[Any]:
        """One result per text, once the model has run them. Raises `QueueFull` without queueing anything.

        An empty queue takes any one request, so a request with more texts than `max_queue` (but within the
        input limits) is served on a quiet server instead of being refused forever.
        """
        texts = list(texts)
        if self._queued_texts and self._queued_texts + len(texts) > self.max_queue:
            raise QueueFull(
                f"the server is at capacity: {self._queued_texts} texts are waiting and the queue holds "
                f"{self.max_queue} (--max-queue); retry later", self._retry_after_s())
        loop = asyncio.get_running_loop()
        request = _Request(texts, loop.create_future(), time.perf_counter())
        self._queued_texts += len(texts)
        self.stats.on_depth(self._queued_texts)
        self._queue.put_nowait(request)
        try:
            return await request.future
        except asyncio.CancelledError:
            # the caller's timeout cancelled the future, which tells the worker to skip what is left of the
            # request; its waiting texts leave the queue's count now, so they hold no one else back
            self._queued_texts -= request.waiting
            request.taken = len(request.texts)
            self.stats.on_depth(self._queued_texts)
            raise

    def _retry_after_s(self) -> int:
        batches_ahead = math.ceil(self._queued_texts / self.max_batch)
        return max(1, math.ceil(batches_ahead * self._batch_seconds))

    # ---- the worker ---------------------------------------------------------------------------------------

    def _take(self, request: _Request, batch: list[tuple[_Request, int, int]], size: int) -> int:
        """Put as many of the request's waiting texts into the batch as fit; returns the batch's new size."""
        if request.future.done():  # its caller gave up (timeout): nothing of it runs
            self._queued_texts -= request.waiting
            request.taken = len(request.texts)
            return size
        if request.taken == 0:
            self.stats.on_queue_time(time.perf_counter() - request.enqueued_at)
        n = min(request.waiting, self.max_batch - size)
        batch.append((request, request.taken, request.taken + n))
        request.taken += n
        self._queued_texts -= n
        self._carry = request if request.waiting else None
        return size + n

    async def _gather(self) -> list[tuple[_Request, int, int]]:
        loop = asyncio.get_running_loop()
        batch: list[tuple[_Request, int, int]] = []
        size = 0
        while not batch:
            request, self._carry = self._carry or await self._queue.get(), None
            size = self._take(request, batch, size)
        # A lone request on an idle server runs at once: waiting for company that is not coming would only
        # add max_wait_ms to its latency. Under load (the last batch had several requests or left some
        # waiting) the batch may wait up to max_wait_ms to fill.
        deadline = loop.time() + (self.max_wait_s if self._under_load else 0.0)
        while size < self.max_batch and self._carry is None:
            if not self._queue.empty():
                size = self._take(self._queue.get_nowait(), batch, size)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                request = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                break
            size = self._take(request, batch, size)
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            self.stats.on_depth(self._queued_texts)
            texts = [t for request, start, end in batch for t in request.texts[start:end]]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, texts)
                if len(results) != len(texts):
                    raise RuntimeError(f"the model answered {len(results)} results for {len(texts)} texts")
            except Exception as exc:  # the model failed on this batch: its requests fail, the server goes on
                for request, _, _ in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            finally:
                seconds = time.perf_counter() - started
                previous = self._batch_seconds or seconds
                self._batch_seconds = 0.8 * previous + 0.2 * seconds
                self.stats.on_batch(len(texts), seconds)
                self._under_load = len(batch) > 1 or not self._queue.empty() or self._carry is not None
            offset = 0
            for request, start, end in batch:
                n = end - start
                request.results[start:end] = results[offset : offset + n]
                offset += n
                request.answered += n
                if request.answered == len(request.texts) and not request.future.done():
                    request.future.set_result(request.results)
