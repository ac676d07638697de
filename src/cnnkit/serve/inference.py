"""Where the model work of requests runs: a pool of threads sized to the machine, each with few torch threads.

Measured on a 2-core machine (benchmarks/serve_load.py): /api/draw served fewer requests per second to 8
clients than to one. Each request ran in asyncio's default pool (up to cores + 4 threads) and every one of
those threads ran torch with as many intra-op (OpenMP) threads as there are cores, so 8 clients meant a dozen
threads spinning at OpenMP barriers on 2 cores, while the Python parts of the requests (decoding, PNG
encoding) waited for CPU, and the model lock was held through all of it. A LeNet forward pass on a 28x28
drawing gains nothing from two intra-op threads; on a busy machine it loses 10-40x (a barrier waits for a
descheduled thread). Here the work of a request runs in ``workers`` threads (the cores, at most
MAX_WORKERS), each with ``cores // workers`` intra-op threads, so torch never asks for more threads than
there are cores however many clients there are; requests beyond that wait in the queue, not at a barrier.
"""

from __future__ import annotations

import asyncio
import functools
import os
from concurrent.futures import ThreadPoolExecutor

import torch

MAX_WORKERS = 4  # each worker may hold its own copy of the Photo page's network (about 20 MB)
TRAINING_THREADS = torch.get_num_threads()  # the process default, kept for the Train page's run


def use_threads(count: int) -> None:
    """Give the calling thread ``count`` torch intra-op threads, now.

    ATen reads the thread count into a thread's OpenMP settings on that thread's first parallel operation, from
    a process-wide value that the next ``set_num_threads`` anywhere overwrites; running one parallel operation
    right away fixes this thread's count before another thread changes the shared value."""
    torch.set_num_threads(count)
    torch.zeros(1 << 16).sum()


class InferencePool:
    def __init__(self, workers: int | None = None, threads_per_worker: int | None = None):
        cores = os.cpu_count() or 1
        self.workers = workers or max(1, min(cores, MAX_WORKERS))
        self.threads_per_worker = threads_per_worker or max(1, cores // self.workers)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="cnnkit-inference",
                                            initializer=use_threads, initargs=(self.threads_per_worker,))

    async def run(self, function, *args):
        """``function(*args)`` in a worker, awaited without blocking the event loop (events keep flowing)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(function, *args))

    def start(self, function, *args):
        """``function(*args)`` in a worker, not awaited (a MicroBatcher's drain); its concurrent future."""
        return self._executor.submit(function, *args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
