"""DCGAN on MNIST and Fashion-MNIST through the one training loop: the Fréchet feature distance after every
epoch (cnnkit.gan: a Gaussian fit of mnist_fast_cnn's 512 penultimate features, the classifier trained for one
epoch on the full training set) and sample grids.

    CNNKIT_DATA=../shared/datasets python benchmarks/gan.py [--epochs 5 --train-subset 12000 --width 32]

Sized for a 2-core CPU (one thread): a balanced training subset and half the paper's widths; the paper's
setting is --train-subset 0 --width 64 --batch-size 128. Writes docs/images/dcgan_<data>.png (samples of the
last epoch, above those of the first) and appends every figure to benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch

from cnnkit import TrainConfig, Trainer, create_model, load_dataset
from cnnkit.data.datasets import balanced_subset
from cnnkit.gan import GAN_TRAINING, FeatureNetwork, GANTask

from record import record

REPO = Path(__file__).resolve().parents[1]


def run(name: str, args, out: Path) -> dict:
    bundle = load_dataset(name)
    start = time.perf_counter()
    features = FeatureNetwork.train(bundle, out / "fid_features")
    feature_seconds = time.perf_counter() - start
    if args.train_subset:
        bundle.train = balanced_subset(bundle.train, args.train_subset)
    torch.manual_seed(0)
    channels, size, _ = bundle.image_shape
    model = create_model("dcgan", in_channels=channels, image_size=size, generator_width=args.width,
                         discriminator_width=args.width)
    config = TrainConfig(**{**GAN_TRAINING, "epochs": args.epochs, "batch_size": args.batch_size, "progress": False})
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer = Trainer(model, bundle, config, out=out / "run", task=GANTask(features, fid_samples=args.fid_samples),
                      overwrite=True)
    trainer.fit()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    scores = [m["val_fid"] for m in trainer.history]
    variant = f"dcgan width {args.width}, {len(bundle.train)} training images, batch {args.batch_size}"
    common = dict(data=name, runs=1, fid_samples=args.fid_samples, features=features.description)
    for epoch, score in enumerate(scores, 1):
        record("dcgan", variant, f"frechet_distance_epoch_{epoch}", round(score, 3), **common)
    # Wall seconds depend on what else the shared cores run; CPU seconds (one thread) much less.
    record("dcgan", variant, "train_seconds", round(seconds, 1), cpu_seconds=round(cpu_seconds, 1), epochs=args.epochs,
           feature_network_seconds=round(feature_seconds, 1), **common)
    samples = out / "run" / "samples"
    docs = REPO / "docs" / "images"
    docs.mkdir(parents=True, exist_ok=True)
    shutil.copy(samples / f"epoch_{args.epochs:03d}.png", docs / f"dcgan_{name}.png")
    shutil.copy(samples / "epoch_001.png", docs / f"dcgan_{name}_epoch1.png")
    return {"data": name, "scores": scores, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "features": features.description}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist,fashion-mnist")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-subset", type=int, default=12000, help="0: the whole training set")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--fid-samples", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "benchmark-gan")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("CNNKIT_THREADS", "1")))
    rows = [run(name, args, args.out / name) for name in args.data.split(",")]
    print(f"\n{'data':<15} {'Fréchet feature distance by epoch':<50} {'train s':>8} {'CPU s':>6}")
    for r in rows:
        print(f"{r['data']:<15} {' -> '.join(f'{s:.1f}' for s in r['scores']):<50} {r['seconds']:>8.0f} "
              f"{r['cpu_seconds']:>6.0f}")
        print(f"{'':<15} features: {r['features']}")


if __name__ == "__main__":
    main()
