"""Exported ONNX models in onnxruntime against the same models in PyTorch: CPU inference images/s and parity.

Each model is exported with ``cnnkit.export_model`` (the torch.export-based ONNX exporter, dynamic batch) and
run on the same random batch by onnxruntime's CPU provider and by PyTorch eager (eval mode, inference_mode),
both held to the same number of threads (onnxruntime: intra-op threads, one inter-op thread). The two are timed
in alternating rounds and each keeps its best round, so a burst of load from other jobs hurts both alike.
efficientnet_lite0 carries its ImageNet weights when the efficientnet-lite0 package is installed (else random
weights, said in the row); the others are random-initialised, which costs the same time.

    python benchmarks/export_speed.py                       # all four models, 1 thread, records to results.jsonl
    python benchmarks/export_speed.py --models lenet5 --seconds 0.5 --threads 2 --no-record
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

from cnnkit import create_model, export_model  # noqa: E402

# model: (input shape, batch)
MODELS = {
    "lenet5": ((1, 32, 32), 64),
    "resnet20": ((3, 32, 32), 64),
    "resnet18": ((3, 224, 224), 8),
    "efficientnet_lite0": ((3, 224, 224), 8),
}


def build(name: str) -> tuple[torch.nn.Module, str]:
    if name == "efficientnet_lite0":
        try:
            return create_model(name, pretrained="imagenet").eval(), "imagenet weights"
        except Exception as exc:  # noqa: BLE001 -- the package is optional; random weights time the same
            print(f"{name}: random weights ({exc})")
    return create_model(name).eval(), "random weights"


def best_rate(step, batch: int, seconds: float) -> float:
    """Images/s of ``step`` over one round of about ``seconds`` (at least three calls)."""
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < seconds:
        step()
        count += 1
    return count * batch / (time.perf_counter() - start)


def compare(name: str, threads: int, seconds: float, rounds: int, folder: Path) -> dict:
    import onnxruntime

    shape, batch = MODELS[name]
    model, weights = build(name)
    export_start = time.perf_counter()
    path = export_model(model, folder / f"{name}.onnx", input_size=shape[1:], overwrite=True)
    export_seconds = time.perf_counter() - export_start
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = torch.randn(batch, *shape)
    feed = {"input": x.numpy()}

    def torch_step():
        with torch.inference_mode():
            return model(x)

    def onnx_step():
        return session.run(None, feed)[0]

    difference = float(np.abs(onnx_step() - torch_step().numpy()).max())
    for _ in range(2):  # warm-up: kernel selection, allocator
        torch_step(), onnx_step()
    torch_rates, onnx_rates = [], []
    for _ in range(rounds):
        torch_rates.append(best_rate(torch_step, batch, seconds))
        onnx_rates.append(best_rate(onnx_step, batch, seconds))
    return {"name": name, "shape": shape, "batch": batch, "weights": weights, "torch": max(torch_rates),
            "onnx": max(onnx_rates), "difference": difference, "export_seconds": export_seconds,
            "file_mib": path.stat().st_size / 2**20, "onnxruntime": onnxruntime.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=1, help="threads for both PyTorch and onnxruntime")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; each side keeps its best")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        results = [compare(name, args.threads, args.seconds, args.rounds, Path(folder)) for name in args.models]
    load_after = os.getloadavg()[0]
    print(f"\n{args.threads} thread(s) each; 1-minute load average {load_before:.2f} before, {load_after:.2f} after")
    print(f"{'model':<20}{'input':>14}{'batch':>7}{'PyTorch img/s':>15}{'onnxruntime':>13}{'ratio':>7}"
          f"{'max |diff|':>12}")
    for r in results:
        print(f"{r['name']:<20}{'x'.join(map(str, r['shape'])):>14}{r['batch']:>7}{r['torch']:>15.1f}"
              f"{r['onnx']:>13.1f}{r['onnx'] / r['torch']:>7.2f}{r['difference']:>12.1e}")
        if not args.no_record:
            record("export_speed", f"{r['name']} onnxruntime", "inference_images_per_second", round(r["onnx"], 1),
                   baseline="pytorch-eager", baseline_value=round(r["torch"], 1),
                   ratio=round(r["onnx"] / r["torch"], 2), max_abs_difference=float(f"{r['difference']:.2g}"),
                   batch=r["batch"], input="x".join(map(str, r["shape"])), threads=args.threads,
                   weights=r["weights"], export_seconds=round(r["export_seconds"], 1),
                   onnx_mib=round(r["file_mib"], 1), onnxruntime=r["onnxruntime"], torch=torch.__version__,
                   load_average=[round(load_before, 2), round(load_after, 2)], runs=args.rounds,
                   note="best of alternating timed rounds; machine shared with other jobs")


if __name__ == "__main__":
    main()
