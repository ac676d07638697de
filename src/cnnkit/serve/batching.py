"""Micro-batching: requests for the same model that arrive while its forward pass runs share the next one.

Measured on a 2-core machine (benchmarks/serve_load.py): 8 concurrent Draw clients got fewer answers per
second than one, because every request paid its own handoff to a worker thread, its own forward pass with
hooks attached and removed, and competed for the GIL with the other workers doing the same. Here each key
(a checkpoint) has at most one drain running in the inference pool: it takes everything queued for that key,
answers it in one batch, and goes on while more is queued. Nothing waits on a timer: a lone request starts a
drain at once and pays no extra latency; under load the batches grow by themselves. The queue is bounded, so
a flood of requests gets a prompt 503 instead of an ever longer wait.

The drain runs in a worker thread and resolves thread-safe futures, so nothing here belongs to one event
loop (FastAPI's test client runs each request on a loop of its own).
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict, deque
from concurrent.futures import Future
from typing import Any, Callable, Hashable

from ..errors import CnnkitError

MAX_BATCH = 32  # drawings per forward pass: bounds one batch's latency and memory
MAX_WAITING = 64  # queued requests, all keys together, before new ones are turned away


class ServerBusyError(CnnkitError):
    """More requests are waiting than the server will queue: try again shortly."""

    http_status = 503


class MicroBatcher:
    """``await submit(key, item)`` -> ``run_batch(key, items)[i]`` for this item, batched with the other items
    of the same key that queued while the previous batch ran.

    ``run_batch`` returns one entry per item, in order: the answer, or the exception that item raised (an
    exception raised by ``run_batch`` itself goes to every item of the batch). ``start(function, *args)``
    runs the drain in a worker thread (InferencePool.start)."""

    def __init__(self, run_batch: Callable[[Hashable, list], list], start: Callable[..., Any],
                 max_batch: int = MAX_BATCH, max_waiting: int = MAX_WAITING, what: str = "requests"):
        self.run_batch, self.start = run_batch, start
        self.max_batch, self.max_waiting, self.what = max_batch, max_waiting, what
        self._queues: dict[Hashable, deque[tuple[Any, Future]]] = defaultdict(deque)
        self._draining: set[Hashable] = set()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(queue) for queue in self._queues.values())

    def enqueue(self, key: Hashable, item) -> Future:
        """Queue ``item`` and make sure a drain serves ``key``; the future holds its answer."""
        future: Future = Future()
        with self._lock:
            if sum(len(queue) for queue in self._queues.values()) >= self.max_waiting:
                raise ServerBusyError(f"The server is busy: {self.max_waiting} {self.what} are already waiting. "
                                      "Try again in a moment.")
            self._queues[key].append((item, future))
            start_drain = key not in self._draining
            self._draining.add(key)
        if start_drain:
            try:
                self.start(self._drain, key)
            except BaseException:  # the pool is shut down: nobody will drain this key
                with self._lock:
                    self._draining.discard(key)
                    self._queues[key].remove((item, future))
                raise
        return future

    async def submit(self, key: Hashable, item):
        return await asyncio.wrap_future(self.enqueue(key, item))

    def _next_batch(self, key: Hashable) -> list[tuple[Any, Future]]:
        with self._lock:
            queue = self._queues[key]
            batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
            if not batch:  # decided under the lock, so an item queued now starts a new drain
                self._draining.discard(key)
                del self._queues[key]
            return batch

    def _drain(self, key: Hashable) -> None:
        while batch := self._next_batch(key):
            try:
                answers = self.run_batch(key, [item for item, _ in batch])
                if len(answers) != len(batch):
                    raise RuntimeError(f"run_batch answered {len(answers)} of {len(batch)} items")
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                answers = [exc] * len(batch)
            for (_, future), answer in zip(batch, answers):
                if future.set_running_or_notify_cancel():
                    if isinstance(answer, BaseException):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
