"""First-layer filters of a CNN trained on CIFAR-10 are smooth, oriented structures (issue 4, the notes' "Filters
trained in the first layer"): their lag-1 spatial autocorrelation is clearly above that of the random
initialisation.

The model is trained with the one training loop. ``filters.png`` (the kernels before and after, side by side)
goes to --out, and the mean autocorrelation before and after is appended to benchmarks/results.jsonl.

    python benchmarks/filter_smoothness.py --model alexnet_owt --epochs 10     # large first-layer kernels
    python benchmarks/filter_smoothness.py --model lenet5_relu --epochs 2      # 5x5 kernels, minutes on a CPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

from cnnkit.data import load_dataset  # noqa: E402
from cnnkit.models import create_model  # noqa: E402
from cnnkit.train import TrainConfig, Trainer  # noqa: E402
from cnnkit.viz import commands  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet5_relu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--train-subset", type=int, default=0, help="train on this many images (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "filter-smoothness")
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl (smoke runs)")
    args = parser.parse_args()
    bundle = load_dataset("cifar10")
    if args.train_subset:
        order = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(args.seed))
        bundle = type(bundle)(bundle.name, bundle.train.subset(order[: args.train_subset]), bundle.test,
                              bundle.classes, bundle.mean, bundle.std, bundle.note)
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=len(bundle.classes), in_channels=3)
    initial = {key: value.detach().clone() for key, value in model.state_dict().items()}
    config = TrainConfig(epochs=args.epochs, lr=args.lr, schedule="onecycle", augment={"crop": 4, "flip": True},
                         seed=args.seed, progress=False)
    summary = Trainer(model, bundle, config, out=args.out / "run", overwrite=True).fit()
    result = commands.filters(model, args.out, before=initial)
    before = float(result["autocorrelation_before"].mean())
    after = float(result["autocorrelation"].mean())
    print(f"{args.model}: first-layer spatial autocorrelation {before:.3f} at initialisation, {after:.3f} after "
          f"{args.epochs} epochs ({summary['test_acc']:.2f}% test accuracy); picture {args.out / 'filters.png'}")
    if not args.no_record:
        data = "cifar10-jpeg" if bundle.note else "cifar10"
        for variant, value in (("initialisation", before), ("trained", after)):
            record("cifar10_filter_smoothness", f"{args.model}-{variant}", "spatial_autocorrelation", round(value, 4),
                   data=data, accuracy=round(summary["test_acc"], 2), epochs=args.epochs, runs=1)


if __name__ == "__main__":
    main()
