"""Shared by the benchmark scripts: one JSON object per measured figure, appended to results.jsonl.

The format is the one in ARCHITECTURE.md ("Benchmark results, one format"); keys a figure lacks are left out.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path

RESULTS = Path(__file__).with_name("results.jsonl")


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {os.cpu_count()}-core {model}"


def commit() -> str:
    """The checkout's commit; where there is no git repository (a copy of the tree sent to a GPU machine), the
    one $CNNKIT_COMMIT names (benchmarks/gpu_check.sh sets it from the copy it was given)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("CNNKIT_COMMIT") or "unknown"


def record(benchmark: str, variant: str, metric: str, value: float, results_file: Path | None = None, **extra) -> dict:
    """Append one figure to ``results_file`` (default benchmarks/results.jsonl; a run on another machine, e.g.
    benchmarks/gpu_check.sh, writes its own file, whose rows are appended here by whoever keeps them)."""
    row = {"benchmark": benchmark, "variant": variant, "metric": metric, "value": value}
    row.update({k: v for k, v in extra.items() if v is not None})
    row.setdefault("device", machine())
    row.setdefault("date", _dt.date.today().isoformat())
    row.setdefault("commit", commit())
    with open(results_file or RESULTS, "a") as f:
        f.write(json.dumps(row) + "\n")
    print("recorded:", json.dumps(row))
    return row
