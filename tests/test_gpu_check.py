"""benchmarks/gpu_check.sh, the GPU check (issue 28), exercised on the CPU: its dry run takes every step (the
device tests collected, the CIFAR-10 recipe and two-process DDP with tiny budgets) and writes its files where it
is told; asked for CUDA on a machine without it, it stops at once and says why."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def run(*args: str, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "OUT"}  # only where a test sets it
    environment.update(CNNKIT_PYTHON=sys.executable, **(env or {}))
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environment,
                          timeout=timeout)


def test_the_dry_run_takes_every_step_on_the_cpu_and_writes_its_files(tmp_path, shared_data):
    # As a user's run would: the decoded CIFAR-10 copy is cached once, not per test.
    cache = {"CNNKIT_CACHE": str(Path.home() / ".cache" / "cnnkit"), "CNNKIT_DATA": str(shared_data)}
    done = run("--dry-run", "--out", str(tmp_path), env=cache)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = (tmp_path / "summary.txt").read_text()
    for step in ("tests", "cifar", "ddp"):
        assert any(line.startswith(step) and "passed" in line for line in summary.splitlines()), summary
    log = (tmp_path / "gpu_check.log").read_text()
    assert "mode: dry (device under test: cpu)" in log
    assert "tests/test_device_placement.py::test_the_batched_finite_check_stops_within_its_interval" in log
    assert "CNNKIT_TEST_DEVICE=cpu" in log and "-m device" in log
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {row["benchmark"] for row in rows} == {"cifar10_speed", "ddp_throughput"}
    cifar = next(row for row in rows if row["benchmark"] == "cifar10_speed")
    assert cifar["train_subset"] == 256 and cifar["epochs"] == 1 and cifar["fit_seconds"] > 0
    assert any(row["variant"] == "lenet5 2 processes" for row in rows)
    environment = (tmp_path / "environment.txt").read_text()
    assert "torch " in environment and "commit: " in environment and "GPU 0" not in environment


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_asking_for_cuda_without_it_stops_at_once_and_says_why(tmp_path):
    done = run("--out", str(tmp_path), timeout=60)
    assert done.returncode == 2
    assert "CUDA was asked for but" in done.stdout and "has no usable CUDA GPU" in done.stdout
    assert "--dry-run" in done.stdout
    assert "could not start" in (tmp_path / "summary.txt").read_text()
    assert not (tmp_path / "results.jsonl").exists()


def test_bad_options_are_refused_with_the_right_ones_named(tmp_path):
    done = run("--skip", "everything", "--out", str(tmp_path), timeout=30)
    assert done.returncode == 2 and "the steps are tests, cifar and ddp" in done.stderr
    done = run("--fast", timeout=30)
    assert done.returncode == 2 and "--dry-run, --stage, --skip STEPS, --out DIR or --help" in done.stderr


def test_out_is_where_the_files_go_when_it_is_set(tmp_path):
    # The GPU machine's $OUT: the files come back from there; here a skipped-everything dry run shows the wiring.
    done = run("--dry-run", "--skip", "tests,cifar,ddp", env={"OUT": str(tmp_path)}, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "gpu_check.log").is_file() and "ddp    skipped: --skip" in (tmp_path / "summary.txt").read_text()
