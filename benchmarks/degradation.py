"""The degradation problem (notes deck 002: "a 56-layer model performs worse than a 20-layer model"; deck 003:
training and test error rise with depth), as He et al. show it in Fig. 1 and Fig. 6 (CVPR 2016): plain20 and
plain56, resnet20 and resnet56, trained with one recipe on the same CIFAR-10 images (the JPEG copy), training
and test error recorded after every epoch.

Each network is one run of the one training loop (``Trainer``); a callback appends two rows to
benchmarks/results.jsonl after every epoch (metric ``train_error`` and ``test_error``, with the ``epoch``), so
a run that is stopped keeps the epochs it finished, and the four networks can be separate processes:

    for net in plain20 plain56 resnet20 resnet56; do
        nohup python benchmarks/degradation.py --network $net > /tmp/degradation-$net.log 2>&1 &
    done
    python benchmarks/degradation.py --plot --picture docs/images/degradation.png   # the picture, from the rows

The README's figure adds ``--train-images 8000 --epochs 16 --augment`` to each of these lines (the plot's too).

Training error is He et al.'s: the error of the training batches in training mode (batch statistics, the
weights changing during the epoch), averaged over the epoch -- what the loop measures anyway, at no extra
cost. Test error is in evaluation mode, on --test-images test images, after each epoch.

The recipe (the same for all four): SGD with momentum 0.9, weight decay 1e-4 (the paper's), batch 64, a one-cycle
learning rate peaking at 0.1 after a quarter of the run (a warm-up, as He et al. used for 110 layers), no
augmentation: degradation is about fitting the training set, and without augmentation that set is fixed. At a
budget of minutes the training set is a class-balanced subset (4,000 images) seen for more epochs (12) rather
than many images seen a few times: a previous attempt at 8,000 images x 6 epochs left resnet56 not yet below
resnet20, the deeper net still catching up. Without augmentation both ResNets nearly memorise 4,000 images in 12
epochs (9.3 % training error each), which hides the difference in depth; ``--augment`` trains as He et al. did
(mirror images and random crops of the image padded by 4 px), so the training set cannot be memorised.

    python benchmarks/degradation.py --network resnet20 --train-images 200 --test-images 100 --epochs 1 \\
        --no-record    # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import record as recorder  # noqa: E402

from cnnkit.data import load_dataset  # noqa: E402
from cnnkit.data.datasets import balanced_subset  # noqa: E402
from cnnkit.models import create_model  # noqa: E402
from cnnkit.train import TrainConfig, Trainer  # noqa: E402
from cnnkit.train.callbacks import Callback  # noqa: E402
from cnnkit.viz import plot_error_curves  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NETWORKS = ("plain20", "plain56", "resnet20", "resnet56")
# He et al. Fig. 6 draws the plain networks and the residual ones side by side.
PANELS = {"plain": ("plain20", "plain56"), "residual": ("resnet20", "resnet56")}
COLOURS = {"plain20": "C0", "resnet20": "C0", "plain56": "C3", "resnet56": "C3"}  # by depth, as in the paper
BENCHMARK = "degradation"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", action="append", choices=NETWORKS,
                        help="train this network (repeatable; default: all four, one after another)")
    parser.add_argument("--train-images", type=int, default=4000, help="class-balanced training subset")
    parser.add_argument("--test-images", type=int, default=1000, help="class-balanced test subset")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1, help="peak of the one-cycle learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--augment", action="store_true",
                        help="He et al.'s augmentation: mirror images and 32 px crops of the image padded by 4 px")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (a shared 2-core machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "degradation", help="run folders go here")
    parser.add_argument("--results", type=Path, default=recorder.RESULTS, help="the rows go to this file")
    parser.add_argument("--no-record", action="store_true", help="append no rows (smoke runs)")
    parser.add_argument("--plot", action="store_true", help="train nothing: draw --picture from the rows")
    parser.add_argument("--picture", type=Path, default=REPO / "docs" / "images" / "degradation.png")
    args = parser.parse_args(argv)
    for name in ("train_images", "test_images", "epochs", "batch_size", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    return args


def setting(args) -> str:
    """The recipe in words: part of every row's variant, so runs with other settings are other lines."""
    return (f"{args.train_images} images x {args.epochs} epochs, batch {args.batch_size}, peak lr {args.lr:g}, "
            f"wd {args.weight_decay:g}, seed {args.seed}" + (", flip + 4 px crop" if args.augment else ""))


class EpochRows(Callback):
    """After every epoch, the epoch's training and test error as two rows of the results file. Every row of a
    run carries the run's start time, so the plot tells a finished run from an older or interrupted one."""

    def __init__(self, network: str, args, started: str):
        self.network, self.args, self.started = network, args, started

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        args = self.args
        load = [round(value, 2) for value in os.getloadavg()]
        common = dict(epoch=metrics["epoch"], epochs=args.epochs, network=self.network, run_started=self.started,
                      train_seconds=metrics["seconds"], data="cifar10-jpeg", train_images=len(trainer.data.train),
                      test_images=len(trainer.data.test), batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, seed=args.seed, threads=args.threads, runs=1,
                      load_average=load,
                      note="training error in training mode over the epoch (He et al.'s); test error in eval mode; "
                           "2-core machine shared with other jobs")
        for metric, accuracy in (("train_error", metrics["train_acc"]), ("test_error", metrics["val_acc"])):
            recorder.record(BENCHMARK, f"{self.network}, {setting(args)}", metric, round(100.0 - accuracy, 2),
                            **common)


def subset_bundle(bundle, args):
    """The same class-balanced training and test images for every network."""
    return type(bundle)(bundle.name, balanced_subset(bundle.train, args.train_images, args.seed),
                        balanced_subset(bundle.test, args.test_images, args.seed), bundle.classes, bundle.mean,
                        bundle.std, bundle.note)


def train(network: str, data, args) -> dict:
    torch.manual_seed(args.seed)  # the same initial draw for every run of a network
    model = create_model(network, num_classes=len(data.classes))
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=0.9,
                         weight_decay=args.weight_decay, schedule="onecycle", onecycle_pct=0.25, seed=args.seed,
                         progress=False, num_workers=0, num_threads=args.threads,
                         augment={"crop": 4, "flip": True} if args.augment else {})
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    callbacks = [] if args.no_record else [EpochRows(network, args, started)]
    return Trainer(model, data, config, out=args.out / network, callbacks=callbacks, overwrite=True).fit()


def curves_from_rows(rows: list[dict], variant_setting: str) -> dict[str, dict[str, list[float]]]:
    """{network: {"epoch", "train_error", "test_error"}} from the rows of ``variant_setting``: for each network
    the latest run (its ``run_started``), each epoch's latest row within it."""
    curves = {}
    for network in NETWORKS:
        mine = [row for row in rows if row.get("benchmark") == BENCHMARK
                and row.get("variant") == f"{network}, {variant_setting}"]
        if not mine:
            continue
        latest = mine[-1]["run_started"]
        by_epoch: dict[int, dict[str, float]] = {}
        for row in mine:
            if row["run_started"] == latest:
                by_epoch.setdefault(row["epoch"], {})[row["metric"]] = row["value"]
        epochs = sorted(by_epoch)
        curves[network] = {"epoch": epochs,
                           **{metric: [by_epoch[e].get(metric, float("nan")) for e in epochs]
                              for metric in ("train_error", "test_error")}}
    return curves


def plot(args) -> Path:
    if not args.results.is_file():
        raise SystemExit(f"{args.results} does not exist: train first (without --plot) to write the rows.")
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    curves = curves_from_rows(rows, setting(args))
    if not curves:
        raise SystemExit(f"{args.results} has no {BENCHMARK!r} rows for the setting '{setting(args)}'; train "
                         "with the same --train-images/--epochs/--batch-size/--lr/--weight-decay/--seed first.")
    print(f"{'network':10} {'epochs':>6} {'train error %':>14} {'test error %':>13}")
    for network, curve in curves.items():
        print(f"{network:10} {curve['epoch'][-1]:6d} {curve['train_error'][-1]:14.2f} {curve['test_error'][-1]:13.2f}")
    panels = {f"{kind} networks": {name: curves[name] for name in names if name in curves}
              for kind, names in PANELS.items()}
    panels = {title: panel for title, panel in panels.items() if panel}
    return plot_error_curves(panels, args.picture,
                             title=f"cifar10-jpeg, {setting(args)}: training error dashed (training mode), "
                                   "test error solid", colours=COLOURS)


def run(args, data) -> dict[str, dict]:
    """Train each network of ``args`` on ``data`` (a DatasetBundle), one after another; their summaries."""
    recorder.RESULTS = args.results  # record() appends to its module's RESULTS
    summaries = {}
    for network in args.network or NETWORKS:
        summaries[network] = train(network, data, args)
        print(f"{network}: test accuracy {summaries[network]['test_acc']:.2f} %")
    return summaries


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.plot:
        print("picture:", plot(args))
        return
    run(args, subset_bundle(load_dataset("cifar10"), args))


if __name__ == "__main__":
    main()
