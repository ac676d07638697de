"""Fashion-MNIST -> 92.0% test accuracy (the figure the notes give for their Keras network), in one run:
cnnkit's fastest recipe against that network (``fashion_cnn``) trained the standard way.

The standard way is the notes' Keras set-up written as a plain PyTorch loop: the per-sample Dataset +
DataLoader of benchmarks/mnist_time_to_99.py, fp32, NCHW, Adam (lr 1e-3, Keras' default), batch 32, evaluated
after every epoch until it reaches 92.0% or passes the time cap (then the ratio is a lower bound). cnnkit's
recipe has a fixed epoch budget chosen in advance and reports the accuracy it gives over several seeds.

    python benchmarks/fashion_time_to_92.py --runs 3                      # both
    python benchmarks/fashion_time_to_92.py --skip-baseline               # cnnkit only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from mnist_time_to_99 import report_time_to_accuracy, run_cnnkit, run_standard_way  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGET = 92.0


def run_baseline(max_epochs: int, time_cap: float, seed: int) -> dict:
    from cnnkit import create_model
    from cnnkit.data.catalog import FASHION_MNIST

    torch.manual_seed(seed)
    model = create_model("fashion_cnn")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return run_standard_way(FASHION_MNIST, model, optimizer, None, F.cross_entropy, 32, TARGET, max_epochs,
                            time_cap, mean=0.2860, std=0.3530)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "fashion_fast.yaml")
    parser.add_argument("--runs", type=int, default=3, help="cnnkit seeds")
    parser.add_argument("--baseline-epochs", type=int, default=30)
    parser.add_argument("--baseline-cap", type=float, default=900.0, help="seconds; stops at the next epoch end")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()

    runs = [run_cnnkit(args.recipe, seed) for seed in range(args.runs)]
    baseline = None if args.skip_baseline else run_baseline(args.baseline_epochs, args.baseline_cap, seed=0)
    report_time_to_accuracy("fashion_time_to_92", args.recipe, runs, baseline, "fashion_cnn-standard", TARGET,
                            "fashion-mnist")

if __name__ == "__main__":
    main()
