"""Training throughput of the one training loop in each precision: fp32, bf16 autocast and fp16 autocast with
torch's GradScaler, on this machine's device (``--device auto``: cuda > mps > cpu).

Each figure is a Trainer run of two epochs on random images of the dataset's shape (reading data is what the
time-to-accuracy benchmarks measure); the second epoch's images/s is recorded, the first being the warm-up.
The question it answers on a CPU: is fp16 worth offering there? (bf16 is the CPU's fast format; fp16 is the
format of GPUs without bf16.)

    python benchmarks/precision.py                       # lenet5 and resnet20, records to results.jsonl
    python benchmarks/precision.py --models lenet5 --batches 4 --no-record
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

from cnnkit import TrainConfig, Trainer, create_model  # noqa: E402
from cnnkit.data.datasets import DatasetBundle, TensorImageDataset  # noqa: E402

# model: (image shape, batch, the data it stands for)
MODELS = {"lenet5": ((1, 28, 28), 128, "mnist"), "resnet20": ((3, 32, 32), 32, "cifar10")}


def random_bundle(shape, count: int) -> DatasetBundle:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, *shape), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 10, (count,), generator=generator)
    classes = [str(index) for index in range(10)]
    split = TensorImageDataset(images, labels, classes)
    return DatasetBundle("random", split, split, classes, (0.5,) * shape[0], (0.25,) * shape[0])


def throughput(name: str, precision: str, batches: int) -> tuple[float, float, str]:
    """(images/s of the second epoch, its training loss, the device) of ``name`` trained in ``precision``."""
    shape, batch, _ = MODELS[name]
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=shape[0])
    config = TrainConfig(epochs=2, batch_size=batch, eval_batch_size=batch, optimizer="sgd", lr=0.01,
                         schedule="constant", precision=precision, validate_every=0, progress=False)
    trainer = Trainer(model, random_bundle(shape, batch * batches), config)
    trainer.fit()
    second = trainer.history[-1]
    return second["images_per_second"], second["train_loss"], str(trainer.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", type=int, default=4, help="batches per epoch")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        for precision in ("fp32", "bf16", "fp16"):
            load_before = os.getloadavg()[0]
            speed, loss, device = throughput(name, precision, args.batches)
            load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            rows.append((name, precision, speed, loss, device, load))
    fp32 = {name: speed for name, precision, speed, *_ in rows if precision == "fp32"}
    print(f"\n{'model':<10}{'precision':<11}{'train img/s':>12}{'vs fp32':>9}{'loss':>9}  device, load")
    for name, precision, speed, loss, device, load in rows:
        ratio = speed / fp32[name]
        print(f"{name:<10}{precision:<11}{speed:>12.1f}{ratio:>8.2f}x{loss:>9.4f}  {device}, load {load}")
        if not args.no_record:
            shape, batch, data = MODELS[name]
            record("precision", f"{name}-{precision}", "train_images_per_second", speed, ratio_to_fp32=round(ratio, 3),
                   baseline="fp32", baseline_value=fp32[name], train_loss=round(loss, 4), batch=batch,
                   batches=args.batches, data=data, threads=torch.get_num_threads(), load_average=load,
                   note="second of two epochs of the Trainer on random images; machine shared with other jobs")


if __name__ == "__main__":
    main()
