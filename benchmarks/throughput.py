"""Training and inference throughput (images/s) against this machine's measured matrix-multiply peak.

For each model, input size and precision: one training step is forward, backward and a Nesterov SGD update on
a batch in channels_last layout; inference is a forward pass in eval mode without gradients. Inputs are
random tensors of the dataset's shape (reading data is what the time-to-accuracy benchmarks measure). The
peak is a large fp32 and bf16 matrix product timed in the same run. A training step costs about three
forward passes (the backward pass computes gradients for inputs and for weights), so

    fraction of peak = images/s x 3 x forward FLOPs per image / matmul FLOP/s of that precision

with forward FLOPs from cnnkit's calculator (2 x multiply-accumulates). The last table is the bf16 diagnosis:
the same small CNN in NCHW and channels_last, fp32 and bf16, to show where bf16 loses on a CPU.

    python benchmarks/throughput.py                 # all models, records to results.jsonl
    python benchmarks/throughput.py --models resnet20 --seconds 3 --no-record
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

from cnnkit import create_model  # noqa: E402
from cnnkit.analysis import summary  # noqa: E402

# model: (input shape, training batch, inference batch, the data it stands for)
MODELS = {
    "lenet5": ((1, 32, 32), 512, 2000, "mnist"),
    "resnet20": ((3, 32, 32), 256, 1000, "cifar10"),
    "cifar_fast_cnn": ((3, 32, 32), 512, 1000, "cifar10"),
    "resnet18": ((3, 224, 224), 32, 64, "imagenet-size"),
}


def matmul_peak(dtype: torch.dtype, size: int = 4096, seconds: float = 2.0) -> float:
    """FLOP/s of a square matrix product, the best of repeated timings."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # warm-up: oneDNN picks its kernel
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def images_per_second(step, batch: int, seconds: float) -> float:
    for _ in range(2):  # warm-up: kernel selection, allocator
        step()
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < seconds:
        step()
        count += 1
    return count * batch / (time.perf_counter() - start)


def measure(model: nn.Module, shape, batch: int, precision: str, train: bool, seconds: float,
            channels_last: bool = True) -> float:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    x = torch.randn(batch, *shape).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    if train:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

        def step():
            with autocast:
                out = model(x)
            F.cross_entropy(out.float(), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    else:
        model.eval()

        def step():
            with torch.no_grad(), autocast:
                model(x)
    return images_per_second(step, batch, seconds)


def plain_cnn(width: int = 16) -> nn.Sequential:
    """The issue's reference net: five 3x3 conv-BN-ReLU layers (two max-pools) and a linear layer, MNIST."""
    layers, channels = [], 1
    for index in range(5):
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
        if index in (1, 3):
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per figure")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"{torch.get_num_threads()} threads; matmul peak fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s (4096x4096)")
    if not args.no_record:
        for precision, peak in peaks.items():
            record("throughput", f"matmul-{precision}", "gflops", round(peak / 1e9, 1), threads=torch.get_num_threads())

    print(f"\n{'model':<16}{'input':<11}{'prec':<6}{'train img/s':>12}{'% peak':>8}{'infer img/s':>13}{'% peak':>8}")
    for name in args.models:
        shape, train_batch, infer_batch, data = MODELS[name]
        flops = summary(name, input_size=shape).totals["flops"]
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            model = create_model(name, in_channels=shape[0])
            train = measure(model, shape, train_batch, precision, True, args.seconds)
            infer = measure(model, shape, infer_batch, precision, False, args.seconds)
            train_peak = 100 * train * 3 * flops / peaks[precision]
            infer_peak = 100 * infer * flops / peaks[precision]
            size = "x".join(map(str, shape))
            print(f"{name:<16}{size:<11}{precision:<6}{train:>12.0f}{train_peak:>7.1f}%{infer:>13.0f}{infer_peak:>7.1f}%",
                  flush=True)
            if not args.no_record:
                common = dict(data=data, precision=precision, input=size, layout="channels_last",
                              threads=torch.get_num_threads(), peak_gflops=round(peaks[precision] / 1e9, 1))
                record("throughput", f"{name}-{precision}", "train_images_per_second", round(train, 1),
                       batch=train_batch, fraction_of_peak=round(train_peak / 100, 3), **common)
                record("throughput", f"{name}-{precision}", "inference_images_per_second", round(infer, 1),
                       batch=infer_batch, fraction_of_peak=round(infer_peak / 100, 3), **common)

    print("\nbf16 diagnosis: a 5-layer conv-BN-ReLU net (width 16) on 1x28x28, training, batch 256")
    print(f"{'layout':<16}{'fp32 img/s':>12}{'bf16 img/s':>12}{'bf16/fp32':>11}")
    for channels_last in (False, True):
        speeds = {}
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            speeds[precision] = measure(plain_cnn(), (1, 28, 28), 256, precision, True, args.seconds, channels_last)
        layout = "channels_last" if channels_last else "NCHW"
        print(f"{layout:<16}{speeds['fp32']:>12.0f}{speeds['bf16']:>12.0f}{speeds['bf16'] / speeds['fp32']:>10.2f}x")
        if not args.no_record:
            for precision, value in speeds.items():
                record("throughput", f"plain5-w16-{precision}-{layout}", "train_images_per_second", round(value, 1),
                       data="mnist", precision=precision, layout=layout, batch=256, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
