"""Dying ReLUs (notes 000): one epoch at a too-high learning rate leaves many ReLU units dead -- negative for
every input, so they output zero and get no gradient -- and they stay dead when training goes on at a sane rate;
Leaky ReLU and ELU pass a gradient on the negative side, so their networks keep learning.

The network is a multilayer perceptron, 784-256-256-256-10, with ``--activations`` as its non-linearity and the
same initialisation (seed) for each; data: MNIST, ``--train-images`` random training images. Two phases through
the one Trainer, Adam, one epoch each: phase 1 at ``--lr`` (each of them: a sane rate and too-high ones), phase 2
at ``--recovery-lr`` (a sane rate, a fresh optimiser). The dead-unit fraction
(``cnnkit.viz.dead_unit_fraction``: units of the three hidden layers whose pre-activation is never above zero on
``--held-out`` test images) is measured at initialisation, after phase 1 and after phase 2; test accuracy (1,000
test images) after phase 2. For Leaky ReLU and ELU "dead" means the same test -- never in the positive, linear
regime -- but such a unit still passes a gradient and some signal, which is the point of them.

    python benchmarks/dying_relu.py              # ~2 minutes on one CPU core
    python benchmarks/dying_relu.py --train-images 1000 --lr 0.1 --no-record    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

from cnnkit.data import load_dataset, random_subset  # noqa: E402
from cnnkit.errors import CnnkitError  # noqa: E402
from cnnkit.layers import make_activation  # noqa: E402
from cnnkit.train import TrainConfig, Trainer  # noqa: E402
from cnnkit.viz import dead_unit_fraction  # noqa: E402

HIDDEN = (256, 256, 256)


def perceptron(activation: str, in_features: int = 784, num_classes: int = 10) -> nn.Sequential:
    """Fully connected layers of HIDDEN units, each followed by its own ``activation`` module (hooks find them)."""
    layers: list[nn.Module] = [nn.Flatten(1)]
    for width in HIDDEN:
        layers += [nn.Linear(in_features, width), make_activation(activation)]
        in_features = width
    return nn.Sequential(*layers, nn.Linear(in_features, num_classes))


def held_out_batch(bundle, count: int) -> torch.Tensor:
    """The first ``count`` of the (already random) test subset, normalised as the Trainer feeds images."""
    images = bundle.test.images[:count].float().div(255)
    mean = torch.tensor(bundle.mean).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std).view(1, -1, 1, 1)
    return (images - mean) / std


def phase(model: nn.Module, data, lr: float, args) -> float | None:
    """One epoch of Adam at ``lr``; the test accuracy, or None when the loss diverged."""
    config = TrainConfig(epochs=1, batch_size=args.batch_size, lr=lr, optimizer="adam", weight_decay=0.0,
                         schedule="constant", seed=args.seed, progress=False, num_workers=0, num_threads=args.threads)
    try:
        return Trainer(model, data, config).fit()["test_acc"]
    except CnnkitError as exc:
        print(f"  diverged: {exc}"[:160])
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--activations", nargs="+", default=["relu", "leaky_relu", "elu"])
    parser.add_argument("--lr", type=float, nargs="+", default=[0.001, 0.01, 0.1],
                        help="phase-1 Adam rates: Adam's usual 0.001 and too-high ones")
    parser.add_argument("--recovery-lr", type=float, default=0.001)
    parser.add_argument("--train-images", type=int, default=10000)
    parser.add_argument("--held-out", type=int, default=500, help="test images the dead units are measured on")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl (smoke runs)")
    args = parser.parse_args()

    bundle = load_dataset("mnist")
    data = type(bundle)(bundle.name, random_subset(bundle.train, args.train_images, args.seed),
                        random_subset(bundle.test, 1000, args.seed), bundle.classes, bundle.mean, bundle.std,
                        bundle.note)
    held_out = held_out_batch(data, args.held_out)
    load = [round(v, 2) for v in os.getloadavg()[:2]]
    results = {}
    for lr in args.lr:
        for activation in args.activations:
            torch.manual_seed(args.seed)
            model = perceptron(activation)
            dead = [dead_unit_fraction(model, held_out)]
            accuracy = [phase(model, data, lr, args)]
            dead.append(dead_unit_fraction(model, held_out))
            accuracy.append(phase(model, data, args.recovery_lr, args) if accuracy[0] is not None else None)
            dead.append(dead_unit_fraction(model, held_out))
            results[(lr, activation)] = {"dead_init": round(dead[0], 4), "dead_after_phase1": round(dead[1], 4),
                                         "dead_after_phase2": round(dead[2], 4), "acc_after_phase1": accuracy[0],
                                         "acc_after_phase2": accuracy[1]}
            print(f"lr {lr:g} {activation}: {results[(lr, activation)]}", flush=True)
    load.append(round(os.getloadavg()[0], 2))
    print(json.dumps({f"{lr:g} {a}": v for (lr, a), v in results.items()}, indent=1))
    print(f"load average before (1, 5 min) and after: {load}")
    if args.no_record:
        return
    for (lr, activation), figures in results.items():
        if figures["acc_after_phase2"] is None:
            continue  # a diverged run has no meaningful units (NaN weights)
        record("dying_relu", f"{activation}, adam lr {lr:g} then {args.recovery_lr:g}", "dead_unit_fraction",
               figures["dead_after_phase2"], dead_unit_fraction_init=figures["dead_init"],
               dead_unit_fraction_after_high_lr=figures["dead_after_phase1"],
               accuracy_after_high_lr=figures["acc_after_phase1"], accuracy=figures["acc_after_phase2"],
               data="mnist", train_images=args.train_images, test_images=1000, held_out_images=args.held_out,
               batch_size=args.batch_size, hidden=list(HIDDEN), seed=args.seed, runs=1, load_average=load,
               note="MLP 784-256-256-256-10; one epoch Adam at lr, one at the recovery lr (fresh optimiser); dead = "
                    "pre-activation never > 0 on the held-out images; 2-core machine shared with other jobs")


if __name__ == "__main__":
    main()
