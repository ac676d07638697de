"""What the plain command reaches: `cnnkit train MODEL --data NAME` with no flags, per (model, dataset) pair.

Each pair trains with exactly the options the plain command uses (the default recipe of
``cnnkit.train.recipes``, which the CLI prints), through the one training loop, and is scored on the whole test
set. Where a full run is too slow for a shared 2-core CPU, the pair's row below trains on a class-balanced subset
of the training set and/or fewer epochs than the recipe's; both are recorded with the accuracy, so a row says
exactly what was run. One JSON line per pair goes to results.jsonl (metric "accuracy", with "seconds": the
training wall time, evaluation included).

    python benchmarks/default_recipes.py                        # every pair, in the order below
    python benchmarks/default_recipes.py --pairs lenet5/mnist,resnet18/mnist
    python benchmarks/default_recipes.py --pairs vgg11/mnist --train-subset 5000 --epochs 1   # override the row

The plain command for a pair is `cnnkit train MODEL --data DATA` (plus `--epochs N` where the row lowers the
budget; a subset needs the API or `--train-subset` where the CLI has it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from record import record  # noqa: E402

# model, dataset, training images (None: all), epochs (None: the recipe's), test images (None: all 10,000). The
# first five are the pairs a student tries first (issue 22); subsets keep each row to minutes on 2 loaded cores
# (measured 2026-12-05 at load 10-18: fashion_cnn trains ~40 img/s there, resnet20 ~150 img/s).
PAIRS = [
    ("lenet5", "mnist", None, None, None),
    ("fashion_cnn", "fashion-mnist", 10000, 2, None),
    ("resnet20", "cifar10", 10000, 3, None),
    ("resnet18", "mnist", 10000, 2, None),
    ("vgg11", "mnist", 10000, 2, None),
    ("mnist_fast_cnn", "mnist", None, None, None),
    ("lenet5_relu", "fashion-mnist", None, None, None),
    ("alexnet", "mnist", 10000, 2, 2000),
    ("resnet18", "cifar10", 10000, 3, None),
    ("cifar_fast_cnn", "cifar10", 10000, 3, None),
]


def run_pair(model_name: str, data_name: str, train_images: int | None, epochs: int | None, test_images: int | None,
             threads: int | None):
    from cnnkit.data import load_dataset
    from cnnkit.data.datasets import balanced_subset, random_subset
    from cnnkit.models.registry import create_model, get_model_entry
    from cnnkit.train import TrainConfig, Trainer
    from cnnkit.train.recipes import default_recipe

    recipe = default_recipe(model_name, data_name)
    if recipe is None:
        raise SystemExit(f"{model_name} on {data_name} has no default recipe")
    options = dict(recipe.options)
    recipe_epochs = options["epochs"]
    if epochs:
        options["epochs"] = epochs
    options.update(progress=False, num_threads=threads)
    config = TrainConfig.from_dict(options)
    print(recipe.describe() + (f"; here {epochs} epochs" if epochs else ""), flush=True)
    entry = get_model_entry(model_name)
    bundle = load_dataset(data_name, image_size=config.input_size or entry.input_size[-1])
    if train_images:
        bundle.train = balanced_subset(bundle.train, train_images, config.seed)
    if test_images:  # drawn at random: some copies are sorted by class
        bundle.test = random_subset(bundle.test, test_images, config.seed)
    torch.manual_seed(config.seed)
    model = create_model(model_name, num_classes=len(bundle.classes), in_channels=bundle.image_shape[0],
                         **recipe.model_args)
    before = os.getloadavg()[0]
    start = time.perf_counter()
    summary = Trainer(model, bundle, config).fit()
    seconds = time.perf_counter() - start
    command = f"cnnkit train {model_name} --data {data_name}" + (f" --epochs {epochs}" if epochs else "")
    record("default_recipes", f"{model_name} on {data_name}: {recipe.source} default recipe", "accuracy",
           round(summary["test_acc"], 2), seconds=round(seconds, 1), epochs=config.epochs,
           recipe_epochs=recipe_epochs, train_images=len(bundle.train), test_images=len(bundle.test),
           data="cifar10-jpeg" if data_name == "cifar10" and "lossy" in bundle.describe() else data_name,
           recipe=recipe.describe(), command=command
           + (f" (on {len(bundle.train)} training images, balanced)" if train_images else "")
           + (f" (scored on {len(bundle.test)} random test images)" if test_images else ""),
           load_average=[round(before, 2), round(os.getloadavg()[0], 2)],
           note=f"{threads or torch.get_num_threads()} thread(s); load_average: 1-minute load before and after "
                "training (2 cores, shared with other jobs): seconds are not comparable to idle runs",
           runs=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", help="comma-separated MODEL/DATA pairs (default: the whole table)")
    parser.add_argument("--train-subset", type=int, help="training images for every pair run (default: the row's)")
    parser.add_argument("--epochs", type=int, help="epochs for every pair run (default: the row's)")
    parser.add_argument("--test-subset", type=int, help="test images for every pair run (default: the row's)")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    rows = {(m, d): (n, e, t) for m, d, n, e, t in PAIRS}
    chosen = [tuple(p.split("/", 1)) for p in args.pairs.split(",")] if args.pairs else list(rows)
    for model_name, data_name in chosen:
        n, e, t = rows.get((model_name, data_name), (None, None, None))
        run_pair(model_name, data_name, args.train_subset or n, args.epochs or e, args.test_subset or t, args.threads)


if __name__ == "__main__":
    main()
