"""Ten-crop testing (Krizhevsky et al. 2012, section 4.1) against one view and against the mirror-image pair, on a
network trained with AlexNet's augmentation (random-scale crops, flips, PCA lighting) by the one Trainer.

The same trained weights are scored on the whole CIFAR-10 test set three ways: the image itself; the image and its
mirror image (logits averaged, tta_flip); the ten 28 px crops (four corners, centre, and their mirror images, each
enlarged to 32 px, softmax averaged, tta_crop=28). Appends the three accuracies to benchmarks/results.jsonl.

    python benchmarks/ten_crop.py                              # lenet5_relu, 10,000 training images, 5 epochs
    python benchmarks/ten_crop.py --train-subset 2000 --epochs 1 --no-record
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

from cnnkit.data import load_dataset  # noqa: E402
from cnnkit.data.datasets import balanced_subset  # noqa: E402
from cnnkit.models import create_model  # noqa: E402
from cnnkit.train import TrainConfig, Trainer  # noqa: E402

AUGMENT = {"resized_crop": [0.35, 1.0], "flip": True, "lighting": 0.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet5_relu")
    parser.add_argument("--train-subset", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--crop", type=int, default=28)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl")
    args = parser.parse_args()
    bundle = load_dataset("cifar10", image_size=32)
    bundle = dataclasses.replace(bundle, train=balanced_subset(bundle.train, args.train_subset, args.seed))
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=10, in_channels=3)
    config = TrainConfig(epochs=args.epochs, optimizer="adam", lr=0.002, weight_decay=5e-4, schedule="onecycle",
                         batch_size=128, augment=AUGMENT, seed=args.seed, validate_every=0, progress=False)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    trainer = Trainer(model, bundle, config)
    trainer.fit()
    train_seconds = time.perf_counter() - start
    results = {}
    for variant, change in (("one view", {}), ("flip pair", {"tta_flip": True}), ("ten-crop", {"tta_crop": args.crop})):
        trainer.config = dataclasses.replace(config, **change)
        start = time.perf_counter()
        results[variant] = (trainer.evaluate(bundle.test)["acc"], time.perf_counter() - start)
        print(f"{variant:>10}: {results[variant][0]:.2f}% top-1 on {len(bundle.test):,} test images "
              f"({results[variant][1]:.0f} s)")
    load_after = os.getloadavg()[0]
    if args.no_record:
        return
    data = "cifar10-jpeg" if bundle.note else "cifar10"
    for variant, (accuracy, seconds) in results.items():
        record("ten_crop", f"{args.model}-{variant}", "accuracy", round(accuracy, 2), eval_seconds=round(seconds, 1),
               baseline="one view", baseline_value=round(results["one view"][0], 2), epochs=args.epochs,
               train_images=len(bundle.train), test_images=len(bundle.test), augment=AUGMENT, crop=args.crop,
               train_seconds=round(train_seconds, 1), data=data, runs=1,
               load_average=[round(load, 2), round(load_after, 2)],
               note="same weights scored three ways; 2-core machine shared with other jobs")


if __name__ == "__main__":
    main()
