"""Gradients through depth (notes deck 003, vanishing gradients with bounded activations): four 20-layer
networks of the same shape, trained alike on MNIST with the one training loop, recording each layer's
weight-gradient norm (``record_gradients``, the ``--record-gradients`` flag):

    plain-sigmoid   plain20, sigmoid, no batch norm    the deep sigmoid net of the 1990s
    plain-relu      plain20, ReLU, no batch norm
    plain-relu-bn   plain20 as the paper has it (ReLU, batch norm)
    residual        resnet20 (ReLU, batch norm, identity shortcuts)

Each row of benchmarks/results.jsonl is one network's first-layer over last-layer gradient norm, at the
initial weights (step 1) and as the mean over the last epoch's recorded steps, with the test accuracy reached;
the picture (``cnnkit viz gradients`` on the four run folders) goes to --out/gradients.png.

    python benchmarks/gradient_depth.py --picture docs/images/gradient_depth.png   # ~2 minutes on one CPU core
    python benchmarks/gradient_depth.py --lr 0.01                         # the same at a fifth of the rate
    python benchmarks/gradient_depth.py --steps 20 --no-record --out /tmp/gradient-depth   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

from cnnkit.data import load_dataset, random_subset  # noqa: E402
from cnnkit.models import create_model  # noqa: E402
from cnnkit.train import TrainConfig, Trainer  # noqa: E402
from cnnkit.viz import commands  # noqa: E402
from cnnkit.viz.gradients import first_to_last_ratio  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# name: (registry model, model arguments)
NETWORKS = {
    "plain-sigmoid": ("plain20", {"activation": "sigmoid", "batch_norm": False}),
    "plain-relu": ("plain20", {"batch_norm": False}),
    "plain-relu-bn": ("plain20", {}),
    "residual": ("resnet20", {}),
}


def subset_bundle(bundle, train_images: int, test_images: int, seed: int):
    """The same random training and test images for every network."""
    return type(bundle)(bundle.name, random_subset(bundle.train, train_images, seed),
                        random_subset(bundle.test, test_images, seed), bundle.classes, bundle.mean, bundle.std,
                        bundle.note)


def train_network(name: str, data, args) -> tuple[Path, dict, float]:
    """(run folder, summary, training seconds) of one network trained with gradient records."""
    model_name, model_args = NETWORKS[name]
    torch.manual_seed(args.seed)
    model = create_model(model_name, num_classes=len(data.classes), in_channels=1, **model_args)
    steps_per_epoch = len(data.train) // args.batch_size
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=0.9,
                         weight_decay=5e-4, schedule="onecycle", seed=args.seed, progress=False, num_workers=0,
                         num_threads=args.threads,
                         record_gradients=max(1, steps_per_epoch // 10))
    run = args.out / name
    started = time.perf_counter()
    summary = Trainer(model, data, config, out=run, overwrite=True).fit()
    return run, summary, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per network (default 300)")
    parser.add_argument("--epochs", type=int, default=3, help="the steps are spread over this many epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05, help="SGD peak learning rate (one-cycle), the same for all")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: on a shared 2-core machine two threads ran 5x slower)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gradient-depth")
    parser.add_argument("--picture", type=Path, help="also copy gradients.png here (the README's picture)")
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl (smoke runs)")
    args = parser.parse_args()
    data = subset_bundle(load_dataset("mnist"), args.steps // args.epochs * args.batch_size, args.test_images,
                         args.seed)
    load = os.getloadavg()
    results, runs = {}, []
    for name in NETWORKS:
        run, summary, seconds = train_network(name, data, args)
        records = json.loads((run / "gradients.json").read_text())
        results[name] = {"ratio_init": first_to_last_ratio(records["steps"][0]),
                         "ratio_last_epoch": first_to_last_ratio(records["epochs"][-1]),
                         "test_acc": round(summary["test_acc"], 2), "seconds": round(seconds, 1)}
        runs.append(run)
    commands.gradients(runs, args.out, labels=list(NETWORKS))
    if args.picture:
        args.picture.write_bytes((args.out / "gradients.png").read_bytes())
    load = [round(value, 2) for value in (*load[:2], os.getloadavg()[0])]
    print(json.dumps(results, indent=2))
    print(f"picture: {args.out / 'gradients.png'}; load average before (1, 5 min) and after: {load}")
    if args.no_record:
        return
    for name, figures in results.items():
        for metric in ("ratio_init", "ratio_last_epoch"):
            # The rate is part of the variant: report.py keeps the latest line of each (benchmark, variant, metric).
            record("gradient_depth", f"{name}, peak lr {args.lr:g}", f"first_to_last_grad_norm_{metric[6:]}",
                   float(f"{figures[metric]:.3g}"),
                   accuracy=figures["test_acc"], train_seconds=figures["seconds"], data="mnist",
                   train_images=len(data.train), test_images=len(data.test), steps=args.steps, lr=args.lr,
                   batch_size=args.batch_size, epochs=args.epochs, seed=args.seed, runs=1,
                   model=NETWORKS[name][0], model_args=NETWORKS[name][1], load_average=load,
                   note="20 layers; same init, SGD one-cycle lr for all; 2-core machine shared with other jobs")


if __name__ == "__main__":
    main()
