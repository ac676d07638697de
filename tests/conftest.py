import os
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
REPO = Path(__file__).resolve().parents[1]
# Two torch threads a test, or the cores' fair share when pytest-xdist runs several workers (`make test` runs one
# a core): more threads than cores make every OpenMP barrier wait for a thread that lost its core.
TEST_THREADS = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


def pytest_configure(config):
    """CNNKIT_TEST_DEVICE naming a device this machine lacks stops the run before any test, with the reason."""
    from helpers import device_under_test

    try:
        device_under_test()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty download cache, so nothing leaks between tests or into ~/.cache."""
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    torch.set_num_threads(TEST_THREADS)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets (CNNKIT_DATA, as .ci/run sets it); tests that need them fail loudly without them."""
    root = Path(os.environ.get("CNNKIT_DATA", REPO.parent / "shared" / "datasets"))
    if not (root / "mnist").is_dir():
        pytest.fail(f"real datasets not found at {root}; set CNNKIT_DATA=../shared/datasets")
    return root
