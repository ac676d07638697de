"""ReLU against tanh (notes 001: ReLU "converges much faster than sigmoid/tanh (e.g. 6x)"): Krizhevsky et al.
2012, Fig. 1 -- a four-layer convolutional network on CIFAR-10 reaches 25 % training error six times faster with
ReLUs than with tanh units, each with its own learning rate chosen to train as fast as possible, no regularisation.

The network is ``cifar_convnet4`` (cuda-convnet's four-weight-layer ``layers-80sec`` net) with
``activation=relu`` and ``activation=tanh``, trained by the one Trainer: SGD with momentum 0.9 at a constant
rate, no weight decay, no augmentation, the same initialisation (seed) for both. For each activation a short
search trains ``--search-epochs`` epochs at each of ``--rates`` and keeps the rate with the lowest training error;
the kept rate then trains until the training error reaches ``--target`` % or ``--max-epochs``.

Training error is the error on the training batches as they are trained on (the running error of the epoch,
as cuda-convnet printed it): 100 - the Trainer's ``train_acc``, free to measure. Seconds are training seconds
(the Trainer's per-epoch ``seconds``), not the evaluation passes. To fit a shared 2-core CPU the runs use a
random subset of the CIFAR-10 JPEG copy (``--train-images``), so the epochs are not the paper's; the ratio is
the figure to compare. The picture (training error against epochs, the 25 % line dashed) is drawn like the
paper's figure.

    python benchmarks/relu_tanh.py --picture docs/images/relu_tanh.png     # ~10 minutes on one CPU core
    python benchmarks/relu_tanh.py --from-results --picture docs/images/relu_tanh.png   # redraw, no training
    python benchmarks/relu_tanh.py --train-images 500 --rates 0.03 --search-epochs 1 --max-epochs 3 --no-record
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
from record import RESULTS, record  # noqa: E402

from cnnkit.data import load_dataset, random_subset  # noqa: E402
from cnnkit.errors import CnnkitError  # noqa: E402
from cnnkit.models import create_model  # noqa: E402
from cnnkit.train import StopAtTarget, TrainConfig, Trainer, time_to_target  # noqa: E402

ACTIVATIONS = ("relu", "tanh")


def training_run(activation: str, lr: float, epochs: int, data, args, target: float | None = None) -> dict:
    """One run of cifar_convnet4 with ``activation`` at rate ``lr``: its history, or the error that ended it."""
    torch.manual_seed(args.seed)
    model = create_model("cifar_convnet4", num_classes=len(data.classes), activation=activation)
    config = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=lr, momentum=0.9, weight_decay=0.0,
                         schedule="constant", seed=args.seed, progress=False, num_workers=0,
                         num_threads=args.threads, validate_every=0)
    # The paper's criterion is training error; stopping there saves the epochs after it.
    callbacks = [StopAtTarget("train_acc", 100 - target)] if target is not None else []
    trainer = Trainer(model, data, config, callbacks=callbacks)
    try:
        summary = trainer.fit()
    except CnnkitError as exc:  # a rate too high for this activation diverges: the search drops it
        return {"lr": lr, "history": trainer.history, "failed": str(exc)}
    return {"lr": lr, "history": trainer.history, "test_acc": summary["test_acc"]}


def train_error(history: list[dict]) -> list[float]:
    return [round(100 - row["train_acc"], 2) for row in history]


def search_rate(activation: str, data, args) -> tuple[float, dict]:
    """The rate of ``args.rates`` with the lowest training error after ``args.search_epochs`` epochs."""
    trials = {}
    for lr in args.rates:
        run = training_run(activation, lr, args.search_epochs, data, args)
        error = train_error(run["history"])[-1] if "failed" not in run else float("inf")
        trials[lr] = error
        print(f"search {activation} lr {lr:g}: training error {error} % after {args.search_epochs} epoch(s)"
              + (f" ({run['failed'][:80]})" if "failed" in run else ""), flush=True)
    best = min(trials, key=lambda lr: (trials[lr], lr))
    if trials[best] == float("inf"):
        raise SystemExit(f"every rate of {args.rates} diverged for {activation}; pass lower --rates")
    return best, trials


def runs_from_results(path: Path) -> tuple[dict, dict]:
    """The latest recorded ratio line's runs ({activation: {"lr", "history"}}) and the line itself: the picture
    redrawn without training again."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = [r for r in rows if r["benchmark"] == "relu_tanh" and r["metric"] == "epochs_ratio"]
    if not lines:
        raise SystemExit(f"{path} has no relu_tanh line yet; run this script without --from-results first")
    line = lines[-1]
    rates = dict(part.split(" lr ") for part in line["variant"].split(" over "))
    runs = {a: {"lr": float(rates[a]), "history": [{"train_acc": 100 - e} for e in line[f"{a}_train_error"]]}
            for a in ACTIVATIONS}
    return runs, line


def plot_title(line: dict) -> str:
    return (f"cifar_convnet4 on {line['train_images']:,} cifar10-jpeg training images, SGD momentum 0.9,\nconstant "
            f"rate, no regularisation; 1 CPU core of a shared 2-core machine (load ~{line['load_average'][-1]:.0f})")


def plot(runs: dict, target: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    styles = {"relu": ("-", "ReLU"), "tanh": ("--", "tanh")}
    for activation, run in runs.items():
        errors = train_error(run["history"])
        style, label = styles.get(activation, (":", activation))
        ax.plot(range(1, len(errors) + 1), [e / 100 for e in errors], style, color="black", linewidth=1.6,
                label=f"{label} (lr {run['lr']:g})")
    ax.axhline(target / 100, color="grey", linestyle=(0, (2, 2)), linewidth=1)
    ax.set_xlabel("epochs")
    ax.set_ylabel("training error rate")
    ax.set_ylim(0, 0.9)
    ax.legend()
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-images", type=int, default=2000, help="random CIFAR-10 training images (default 2000)")
    parser.add_argument("--test-images", type=int, default=1000, help="scored once at the end, for the record")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.03, 0.1],
                        help="SGD rates the search tries for each activation")
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=40, help="the cap of the run to the target")
    parser.add_argument("--target", type=float, default=25.0, help="training error, %% (the paper's 25)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picture", type=Path, help="where to draw training error against epochs")
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl (smoke runs)")
    parser.add_argument("--from-results", action="store_true",
                        help="only redraw --picture from the latest recorded line, training nothing")
    args = parser.parse_args()
    if args.from_results:
        runs, line = runs_from_results(RESULTS)
        plot(runs, line["target_train_error"], args.picture or Path("relu_tanh.png"), plot_title(line))
        return

    bundle = load_dataset("cifar10")
    data = type(bundle)(bundle.name, random_subset(bundle.train, args.train_images, args.seed),
                        random_subset(bundle.test, args.test_images, args.seed), bundle.classes, bundle.mean,
                        bundle.std, bundle.note)
    load_before = os.getloadavg()[:2]
    started = time.perf_counter()
    runs, searches = {}, {}
    for activation in ACTIVATIONS:
        lr, searches[activation] = search_rate(activation, data, args)
        runs[activation] = training_run(activation, lr, args.max_epochs, data, args, target=args.target)
        if "failed" in runs[activation]:
            raise SystemExit(f"{activation} at lr {lr:g} diverged after the search kept it: "
                             f"{runs[activation]['failed']}")
    load = [round(v, 2) for v in (*load_before, os.getloadavg()[0])]
    reached = {a: time_to_target(r["history"], "train_acc", 100 - args.target) for a, r in runs.items()}
    results = {a: {"lr": r["lr"], "search": searches[a], "train_error": train_error(r["history"]),
                   "epochs_to_target": reached[a][0] if reached[a] else None,
                   "seconds_to_target": round(reached[a][1], 1) if reached[a] else None,
                   "epochs_trained": len(r["history"]), "test_acc": r["test_acc"]} for a, r in runs.items()}
    relu, tanh = results["relu"], results["tanh"]
    # Not reaching the target within the cap still bounds the ratio from below: at least cap / relu's epochs.
    tanh_epochs = tanh["epochs_to_target"] or tanh["epochs_trained"]
    ratio = round(tanh_epochs / relu["epochs_to_target"], 2) if relu["epochs_to_target"] else None
    seconds_ratio = (round(tanh["seconds_to_target"] / relu["seconds_to_target"], 2)
                     if relu["seconds_to_target"] and tanh["seconds_to_target"] else None)
    print(json.dumps(results, indent=1))
    at_least = "" if tanh["epochs_to_target"] else ">= "
    print(f"epochs to {args.target:g} % training error: relu {relu['epochs_to_target']}, tanh "
          f"{tanh['epochs_to_target'] or f'not within {tanh_epochs}'}; ratio {at_least}{ratio}; "
          f"seconds ratio {seconds_ratio}; load average before (1, 5 min) and after: {load}; "
          f"{time.perf_counter() - started:.0f} s in all")
    if args.picture:
        plot(runs, args.target, args.picture, plot_title({"train_images": args.train_images, "load_average": load}))
        print("picture:", args.picture)
    if args.no_record or ratio is None:
        return
    common = dict(data="cifar10-jpeg", train_images=args.train_images, test_images=args.test_images,
                  batch_size=args.batch_size, rates_searched=args.rates, search_epochs=args.search_epochs,
                  max_epochs=args.max_epochs, target_train_error=args.target, seed=args.seed, runs=1,
                  model="cifar_convnet4", load_average=load, threads=args.threads,
                  note="training error = running error on the training batches; SGD momentum 0.9, constant lr, "
                       "no weight decay or augmentation; 2-core machine shared with other jobs")
    for activation, figures in results.items():
        if figures["epochs_to_target"] is None:
            continue
        variant = f"{activation}, lr {figures['lr']:g}"
        extra = dict(common, accuracy=figures["test_acc"], train_error=figures["train_error"],
                     search_train_error=figures["search"])
        record("relu_tanh", variant, f"epochs_to_{args.target:g}pct_train_error", figures["epochs_to_target"],
               **extra)
        record("relu_tanh", variant, f"seconds_to_{args.target:g}pct_train_error", figures["seconds_to_target"],
               **extra)
    bound = "" if tanh["epochs_to_target"] else f" (lower bound: tanh not there in {tanh_epochs} epochs)"
    record("relu_tanh", f"tanh lr {tanh['lr']:g} over relu lr {relu['lr']:g}", "epochs_ratio", ratio,
           seconds_ratio=seconds_ratio, **common, note_bound=bound or None,
           relu_train_error=relu["train_error"], tanh_train_error=tanh["train_error"])


if __name__ == "__main__":
    main()
