"""Training throughput of data-parallel cnnkit (PyTorch DDP through torchrun) on 1 and N processes.

    CNNKIT_DATA=../shared/datasets python benchmarks/ddp_throughput.py                 # CPU: 1 and 2 processes
    python benchmarks/ddp_throughput.py --device cuda --nproc 1                         # one GPU

Every configuration runs the one training loop (``Trainer``) under torchrun, on the first ``--images`` MNIST
training images, with a fixed batch per process (weak scaling: N processes train on a global batch N times
larger, as DDP users do). The figure is the training images/s of the last epoch (the first one pays for
warm-up), as the Trainer reports it; evaluation is left out. On CPU each process gets one thread, so N
processes use N cores; "all cores, 1 process" is the threaded single-process alternative DDP competes with.

Scaling efficiency = images/s with N processes / (N x images/s with 1 process); 1.0 is perfect scaling.
Each figure is appended to benchmarks/results.jsonl (see ARCHITECTURE.md, "Benchmark results, one format").
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results.jsonl"


def worker(args) -> None:
    """One torchrun worker: the Trainer, which joins the process group torchrun describes."""
    import torch

    from cnnkit import TrainConfig, Trainer, create_model, load_dataset
    from cnnkit.data import DatasetBundle
    from cnnkit.train import distributed

    full = load_dataset("mnist")
    data = DatasetBundle(full.name, full.train.subset(range(args.images)), full.test.subset(range(1000)),
                         full.classes, full.mean, full.std)
    torch.manual_seed(0)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=0.05,
                         schedule="constant", device=args.device, num_threads=args.threads, progress=False,
                         eval_batch_size=1000)
    try:
        model = create_model(args.model, num_classes=len(data.classes), in_channels=data.image_shape[0])
        Trainer(model, data, config, out=args.out).fit()
    finally:
        distributed.shutdown()


def measure(model: str, nproc: int, threads: int, args) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                   __file__, "--worker", "--model", model, "--images", str(args.images), "--epochs", str(args.epochs),
                   "--batch-size", str(args.batch_size), "--device", args.device, "--threads", str(threads),
                   "--out", out]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(Path(out) / "metrics.csv") as f:
            return float(list(csv.DictReader(f))[-1]["images_per_second"])


def best_of(runs: int, *measure_args) -> float:
    return max(measure(*measure_args) for _ in range(runs))


def registered(names: list[str]) -> list[str]:
    from cnnkit import list_models

    available = set(list_models())
    return [name for name in names if name in available]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet5,resnet20,lenet5_relu",
                        help="comma-separated; those not registered (the zoo not merged yet) are skipped")
    parser.add_argument("--nproc", default="1,2", help="process counts to measure, e.g. 1,2")
    parser.add_argument("--images", type=int, default=8192, help="MNIST training images per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128, help="per process")
    parser.add_argument("--runs", type=int, default=1, help="repeat each configuration; keep the best")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--note", default="", help="appended to the device description, e.g. 'cores shared'")
    parser.add_argument("--results", type=Path, default=RESULTS, help="append the figures here (default: %(default)s)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import torch

    from cnnkit.train.trainer import describe_device

    device = describe_device(torch.device(args.device)) + (f" ({args.note})" if args.note else "")
    cores = len(os.sched_getaffinity(0))
    counts = [int(n) for n in args.nproc.split(",")]
    sys.path.insert(0, str(HERE))
    from record import commit as current_commit

    commit = current_commit()
    rows = []

    def figure(variant: str, metric: str, value: float, **baseline) -> None:
        rows.append({"benchmark": "ddp_throughput", "variant": variant, "metric": metric, "value": value, **baseline,
                     "runs": args.runs, "data": "mnist", "device": device, "date": dt.date.today().isoformat(),
                     "commit": commit})

    for model in registered(args.models.split(",")):
        single = best_of(args.runs, model, 1, 1, args)
        print(f"{model:<12} 1 process : {single:8.0f} images/s")
        figure(f"{model} 1 process", "images_per_second", round(single, 1))
        if args.device == "cpu" and cores > 1:
            threaded = best_of(args.runs, model, 1, cores, args)
            print(f"{model:<12} 1 process, {cores} threads: {threaded:8.0f} images/s")
            figure(f"{model} 1 process {cores} threads", "images_per_second", round(threaded, 1))
        for n in (n for n in counts if n > 1):
            value = best_of(args.runs, model, n, 1, args)
            efficiency = value / (n * single)
            print(f"{model:<12} {n} processes: {value:8.0f} images/s  speed-up {value / single:.2f}x  "
                  f"scaling efficiency {efficiency:.0%}")
            figure(f"{model} {n} processes", "images_per_second", round(value, 1), baseline=f"{model} 1 process",
                   baseline_value=round(single, 1), ratio=round(value / single, 3))
            figure(f"{model} {n} processes", "scaling_efficiency", round(efficiency, 3))
    with open(args.results, "a") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"appended {len(rows)} figures to {args.results}")


if __name__ == "__main__":
    main()
