"""glibc's malloc thresholds for CPU training: keep freed tensor memory in the process instead of handing it
back to the kernel, so that each step's tensors do not arrive as fresh pages.

A CPU training step allocates the same activations, gradients and pooling indices, a few megabytes each, every
step. glibc serves a block above its mmap threshold with a fresh ``mmap`` and unmaps it on free, and trims the
top of its heap once more than the trim threshold lies free there; its thresholds adapt upwards only slowly. Each
page that comes back fresh costs a page fault and zeroing on first write. Measured on a 2-core AMD EPYC (one
epoch of recipes/fashion_fast.yaml): 1.1-1.8 million minor faults and 2-4 s of system time in a process's first
run, about 390,000 in its second; with the thresholds below about 30,000 in both. In a bare training loop of
``mnist_fast_cnn`` (32/64 maps, batch 256, bf16) a step took 24-27 ms instead of 31-41 ms.

So the trainer raises the mmap threshold to glibc's 64-bit maximum (32 MiB: larger tensors are still mapped and
unmapped) and the trim threshold to 1 GiB (freed memory below that stays for the next step; the process keeps
its peak heap until it exits). Nothing is changed when the user set ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` (glibc reads those at start), or where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed on 64-bit: 4 MiB x sizeof(long)
TRIM_THRESHOLD = 1024 * 1024 * 1024
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_in_force: str | None = None  # what the first call found or set, for every later run's log


def keep_freed_memory(environ: Mapping[str, str] = os.environ, libc: ctypes.CDLL | None = None) -> str:
    """Set the thresholds, once per process; returns what is in force, for the trainer's log."""
    global _in_force
    if _in_force is None:
        _in_force = _set_thresholds(environ, libc)
    return _in_force


def _set_thresholds(environ: Mapping[str, str], libc: ctypes.CDLL | None) -> str:
    chosen = [f"{name}={environ[name]}" for name in USER_VARIABLES if name in environ]
    if chosen:
        return "malloc thresholds " + ", ".join(chosen) + " (yours)"
    try:
        libc = libc or ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has it)
    except (OSError, AttributeError):
        return "malloc: the C library's own thresholds (not glibc)"
    if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "malloc: glibc refused cnnkit's thresholds; its own are in force"
    return "malloc keeps freed blocks up to 32 MiB for the next step (cnnkit's default)"
