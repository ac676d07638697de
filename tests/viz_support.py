"""Shared by the viz tests: run their tiny models on one thread.

Their convolutions are a few kilobytes, too small to split across threads; with two threads on a 2-core machine
that other processes also use, each op waits for the other thread. One activation-maximisation test took 34 s
that way instead of 0.24 s on one thread. Import both fixtures into a test module to use them.
"""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def single_thread_for_module_fixtures():
    """Covers module-scoped fixtures (training the tiny CNN, optimising images), set up before any test."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def single_thread():
    """Covers each test's body. It runs after any conftest fixture that sets the thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
