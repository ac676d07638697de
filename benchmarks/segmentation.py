"""U-Net on the synthetic shapes dataset: mean IoU and Dice on the test split, trained through the one loop.

    CNNKIT_THREADS=1 python benchmarks/segmentation.py [--epochs 12 --base-channels 16 --out runs/bench-unet]

Writes the run folder (metrics.csv, curves.png, checkpoint) and overlays of test images, prints the figures
and appends them to benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from cnnkit import TrainConfig, Trainer, create_model
from cnnkit.segment import SegmentationTask, load_segmentation_data, predict_mask, write_overlay

from record import record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--num-train", type=int, default=1500)
    parser.add_argument("--num-test", type=int, default=400)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-unet-shapes"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("CNNKIT_THREADS", "1")))

    bundle = load_segmentation_data("shapes", args.image_size, args.num_train, args.num_test)
    torch.manual_seed(0)
    model = create_model("unet", num_classes=len(bundle.classes), in_channels=3, padding=True,
                         base_channels=args.base_channels, batch_norm=True)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="adam", lr=args.lr,
                         weight_decay=0.0, augment={"flip": True}, progress=False)
    start = time.perf_counter()
    trainer = Trainer(model, bundle, config, out=args.out, task=SegmentationTask(len(bundle.classes)),
                      overwrite=True)
    summary = trainer.fit()
    seconds = time.perf_counter() - start
    for index in range(8):
        image = bundle.test.images[index]
        write_overlay(image, predict_mask(model, image, trainer.preprocess.mean, trainer.preprocess.std),
                      args.out / "overlays" / f"test{index:02d}.png", class_names=bundle.classes)
    variant = f"unet-base{args.base_channels}-padded-bn, ce+dice, {args.epochs} epochs"
    data = f"shapes(seed=0) {args.num_train} train / {args.num_test} test, {args.image_size}px"
    for metric in ("miou", "dice", "pixel_acc"):
        record("unet_shapes_segmentation", variant, metric, round(summary[f"test_{metric}"], 4), data=data,
               train_seconds=round(seconds, 1), runs=1)
    print(f"test mIoU {summary['test_miou']:.4f}  Dice {summary['test_dice']:.4f}  pixel accuracy "
          f"{summary['test_pixel_acc']:.4f}  ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
