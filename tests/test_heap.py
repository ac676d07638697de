"""glibc's malloc thresholds that the trainer sets for CPU training (cnnkit/train/heap.py)."""

from __future__ import annotations

import resource
import sys

import pytest
import torch

from cnnkit.train import heap


class FakeGlibc:
    def __init__(self):
        self.calls = []

    def gnu_get_libc_version(self):
        return b"2.36"

    def mallopt(self, parameter, value):
        self.calls.append((parameter, value))
        return 1


class NotGlibc:
    def mallopt(self, parameter, value):  # musl has no mallopt that does anything, and no gnu_get_libc_version
        raise AssertionError("must not be called")


def test_the_thresholds_are_set_through_mallopt():
    libc = FakeGlibc()
    text = heap._set_thresholds({}, libc)
    assert libc.calls == [(heap.M_MMAP_THRESHOLD, 32 * 2**20), (heap.M_TRIM_THRESHOLD, 2**30)]
    assert "cnnkit's default" in text


def test_the_users_settings_and_other_c_libraries_are_left_alone():
    libc = FakeGlibc()
    text = heap._set_thresholds({"MALLOC_TRIM_THRESHOLD_": "0"}, libc)
    assert libc.calls == [] and text == "malloc thresholds MALLOC_TRIM_THRESHOLD_=0 (yours)"
    assert "not glibc" in heap._set_thresholds({}, NotGlibc())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and Linux's fault counters")
def test_freed_tensors_come_back_without_page_faults():
    """After the call, a step's worth of 9 MB tensors allocated, written and freed again and again costs no fresh
    pages (glibc's defaults map and unmap such blocks, or trim them, so every write faulted pages in again)."""
    if "not glibc" in heap.keep_freed_memory():
        pytest.skip("not glibc")

    def step():
        tensors = [torch.ones(256, 32, 24, 24) for _ in range(3)] + [torch.ones(256, 16, 12, 12)]
        del tensors

    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 20 * 2300 / 10  # a fresh 9.4 MB tensor alone is 2,300 pages; allow a tenth of one a step
