"""Why group norm exists (Wu & He 2018, Fig. 1; notes deck 003, "Alternative forms of normalization"): the
same CIFAR ResNet trained with batch norm and with group norm at batches of 2, 4 and 32 images, everything
else alike, and the test accuracy each reaches.

    same network      resnet20 (6n+2 = 20 layers, 16/32/64 maps), norm=batch or norm=group (G = 8 groups)
    same data         the same balanced Fashion-MNIST training subset, the same epochs, so the same images
    same lr rule      SGD momentum 0.9, one-cycle, peak lr 0.1 x batch / 32 (Goyal et al.'s linear scaling,
                      which Wu & He also use), weight decay 5e-4
    evaluation        the standard one: model.eval(), so batch norm uses its running averages, group norm the
                      statistics of each image (it has no others)

Batch norm normalises with the mean and variance of the batch; at 2 images those are noisy estimates that
also differ from the running averages the test uses. Group norm normalises each image on its own, so the batch
does not enter at all. Each line of benchmarks/results.jsonl is one (norm, batch) pair's test accuracy.

    python benchmarks/norm_batch_size.py                 # ~12 minutes on one core of a shared 2-core machine
    python benchmarks/norm_batch_size.py --data cifar10 --epochs 10
                                                         # photographs, 5x the steps: ~23 minutes on one core
    python benchmarks/norm_batch_size.py --train-images 256 --test-images 200 --batch-sizes 2 32 --no-record
                                                         # a smoke run

One run is ``cnnkit train resnet20 --data fashion-mnist --model-arg norm=group --batch-size 2 --lr 0.1
--scale-lr --reference-batch 32 --epochs 2 --threads 1`` (with --train-subset/--test-subset).
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

from cnnkit.data import load_dataset  # noqa: E402
from cnnkit.data.datasets import subset_bundle  # noqa: E402
from cnnkit.models import create_model  # noqa: E402
from cnnkit.train import TrainConfig, Trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCE_BATCH = 32  # the batch the peak lr is given for; other batches scale it linearly


def model_args(args) -> dict:
    # Wu & He (2018, §4.1) start each residual block's last group norm at scale 0, after Goyal et al.'s batch-norm
    # setting; the sweep applies it to both, so the two norms differ only in what they normalise over.
    return {"zero_init_residual": True} if args.zero_init_residual else {}


def train_one(model_name: str, norm: str, batch_size: int, data, args) -> tuple[dict, float]:
    """(summary, training seconds) of one network trained at one batch size."""
    torch.manual_seed(args.seed)
    model = create_model(model_name, num_classes=len(data.classes), in_channels=data.image_shape[0], norm=norm,
                         **model_args(args))
    config = TrainConfig(epochs=args.epochs, batch_size=batch_size, eval_batch_size=500, lr=args.lr,
                         scale_lr=True, reference_batch=REFERENCE_BATCH, momentum=0.9, weight_decay=5e-4,
                         schedule="onecycle", seed=args.seed, progress=False, num_workers=0,
                         num_threads=args.threads, validate_every=0)
    started = time.perf_counter()
    summary = Trainer(model, data, config, out=args.out / f"{norm}-b{batch_size}", overwrite=True).fit()
    return summary, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20", help="a CIFAR ResNet of the zoo (default resnet20)")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--norms", nargs="+", default=["batch", "group"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4, 32])
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.1, help=f"peak lr at batch {REFERENCE_BATCH} (scaled linearly)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "norm-batch-size")
    parser.add_argument("--zero-init-residual", action="store_true",
                        help="each residual block's last norm starts at scale 0 (Wu & He's setting, both norms)")
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl (smoke runs)")
    args = parser.parse_args()
    data = subset_bundle(load_dataset(args.data), args.train_images, args.test_images, args.seed)
    load_before = os.getloadavg()
    results = {}
    for norm in args.norms:
        for batch_size in args.batch_sizes:
            summary, seconds = train_one(args.model, norm, batch_size, data, args)
            results[(norm, batch_size)] = (round(summary["test_acc"], 2), round(seconds, 1))
            print(f"{norm:>8} norm, batch {batch_size:>3}: test accuracy {summary['test_acc']:.2f} % "
                  f"({seconds:.0f} s)", flush=True)
    load = [round(value, 2) for value in (*load_before[:2], os.getloadavg()[0])]
    print(json.dumps({f"{n}, batch {b}": acc for (n, b), (acc, _) in results.items()}, indent=2))
    print(f"load average before (1, 5 min) and after: {load}")
    if args.no_record:
        return
    data_label = "cifar10-jpeg" if args.data == "cifar10" and data.note else args.data
    for (norm, batch_size), (accuracy, seconds) in results.items():
        # The data set and epochs are in the variant: sweeps at other budgets or on other data sit beside each other.
        variant = (f"{args.model} {norm} norm, batch {batch_size}, {data_label}, {args.epochs} epochs"
                   + (", zero-init residual" if args.zero_init_residual else ""))
        record("norm_batch_size", variant, "test_accuracy", accuracy, data=data_label, model=args.model,
               model_args={"norm": norm, **model_args(args)}, batch_size=batch_size,
               lr=args.lr * batch_size / REFERENCE_BATCH,
               epochs=args.epochs, train_images=len(data.train), test_images=len(data.test), train_seconds=seconds,
               seed=args.seed, runs=1, threads=args.threads, load_average=load,
               note="same images, epochs and linear lr rule for all; evaluated in eval mode (BN running "
                    "averages); one seed; 2-core machine shared with other jobs")


if __name__ == "__main__":
    main()
