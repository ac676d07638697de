"""Loss landscapes with and without skip connections (Li et al. 2018, Fig. 5): resnet20 against plain20 on CIFAR-10.

Each network is trained with the one training loop. Its weights at initialisation are kept, so the script can
also draw the 1-D line from the initial to the trained weights. Then the loss is evaluated on a 2-D plane of
filter-normalised random directions around the trained weights, on a fixed subset of the test set. The PNGs go
to --out. One row per network is appended to benchmarks/results.jsonl with the curvature statistics of
cnnkit.viz.landscape_statistics. The notes predict lower figures for resnet20: a smoother, more convex basin.

    python benchmarks/landscape_skip_connections.py --epochs 30                     # the real comparison (GPU)
    python benchmarks/landscape_skip_connections.py --runs runs/resnet20 runs/plain20  # already trained
    python benchmarks/landscape_skip_connections.py --epochs 1 --train-subset 1024 --examples 64 --resolution 5 \
        --no-record --out /tmp/landscape-smoke   # the whole pipeline in a few minutes on a CPU; figures mean nothing
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

from cnnkit.data import load_dataset  # noqa: E402
from cnnkit.models import create_model  # noqa: E402
from cnnkit.predict import preprocess_from_meta  # noqa: E402
from cnnkit.train import TrainConfig, Trainer, load_model_checkpoint  # noqa: E402
from cnnkit.viz import commands  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NETWORKS = ("resnet20", "plain20")


def trained_network(name: str, bundle, args) -> tuple[torch.nn.Module, dict | None, object, float]:
    """(model, weights at initialisation, preprocess, test accuracy) after training ``name`` with the Trainer."""
    torch.manual_seed(args.seed)
    model = create_model(name, num_classes=len(bundle.classes))
    initial = {key: value.detach().clone() for key, value in model.state_dict().items()}
    data = bundle
    if args.train_subset:
        order = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(args.seed))
        data = type(bundle)(bundle.name, bundle.train.subset(order[: args.train_subset]), bundle.test, bundle.classes,
                            bundle.mean, bundle.std, bundle.note)
    config = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
                         schedule="onecycle", augment={"crop": 4, "flip": True}, seed=args.seed, progress=False,
                         precision=args.precision, channels_last=args.precision == "bf16")
    trainer = Trainer(model, data, config, out=args.out / f"run-{name}", overwrite=True)
    summary = trainer.fit()
    return model, initial, trainer.preprocess, summary["test_acc"]


def test_batches(bundle, preprocess, examples: int, seed: int, batch_size: int = 250):
    """``examples`` test images drawn at random once (the copy's files are sorted by class, so the first ones
    would all be aeroplanes), preprocessed as in training: the fixed subset of the landscape."""
    chosen = torch.randperm(len(bundle.test), generator=torch.Generator().manual_seed(seed))[:examples]
    images, labels = bundle.test.images[chosen], bundle.test.labels[chosen]
    return [(preprocess(images[start:start + batch_size]), labels[start:start + batch_size])
            for start in range(0, len(labels), batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs=2, type=Path, metavar=("RESNET20_RUN", "PLAIN20_RUN"),
                        help="use these trained run folders instead of training (no 1-D line then)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="training precision (bf16 autocast trains ~1.7x faster on CPUs with AVX-512 BF16)")
    parser.add_argument("--train-subset", type=int, default=0, help="train on this many images (smoke runs)")
    parser.add_argument("--examples", type=int, default=1000, help="test images the loss is averaged over")
    parser.add_argument("--resolution", type=int, default=21)
    parser.add_argument("--span", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "landscape")
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl (smoke runs)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = load_dataset("cifar10")
    results = {}
    for index, name in enumerate(NETWORKS):
        if args.runs:
            model, meta = load_model_checkpoint(args.runs[index])
            initial, preprocess = None, preprocess_from_meta(meta)
        else:
            model, initial, preprocess, accuracy = trained_network(name, bundle, args)
        started = time.perf_counter()
        summary = commands.landscape(model, test_batches(bundle, preprocess, args.examples, args.seed), args.out / name,
                                     start=initial, num_examples=args.examples, resolution=args.resolution,
                                     span=args.span, seed=args.seed)
        seconds = time.perf_counter() - started
        results[name] = summary["statistics"]
        if args.no_record:
            continue
        for metric, value in summary["statistics"].items():
            data = "cifar10-jpeg" if bundle.note else "cifar10"
            record("cifar10_landscape", name, metric, round(value, 4), data=data, runs=1,
                   resolution=args.resolution, examples=args.examples, epochs=None if args.runs else args.epochs,
                   test_acc=None if args.runs else round(accuracy, 2),
                   seconds=round(seconds, 1))
    print(json.dumps(results, indent=2))
    print(f"pictures: {args.out}/resnet20/landscape.png and {args.out}/plain20/landscape.png")


if __name__ == "__main__":
    main()
