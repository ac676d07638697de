"""cnnkit.detect.ops (vectorised PyTorch) against the slow obvious loops of tests/test_detect_ops.py, on the same
random inputs, at the sizes Faster R-CNN uses them: NMS over the RPN's proposals, RoIAlign and RoI pooling of
128 proposals (a second-stage mini-batch) from a stride-16 feature map of a 600 x 800 image. Each result is
checked against the loop before it is timed; cnnkit's time is the best of ``--repeats`` runs, the loop's is one.

    python benchmarks/detect_ops.py --threads 1
    python benchmarks/detect_ops.py --threads 1 --no-record
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from record import record  # noqa: E402
from test_detect_ops import random_boxes, slow_nms, slow_roi_align, slow_roi_pool  # noqa: E402

from cnnkit.detect import ops  # noqa: E402


def timed(function, repeats: int) -> tuple[object, float]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return result, best


def cases(proposals: int, rois: int, channels: int):
    g = torch.Generator().manual_seed(0)
    boxes = random_boxes(proposals, g, extent=760, min_size=16, max_size=300)
    scores = torch.rand(proposals, generator=g, dtype=torch.float64)
    features = torch.randn(1, channels, 38, 50, generator=g)  # stride 16 over 600 x 800
    picked = random_boxes(rois, g, extent=700, min_size=32, max_size=300).float()
    roi_table = torch.cat([torch.zeros(rois, 1), picked], 1)
    return {
        f"nms-{proposals}": (lambda: ops.nms(boxes, scores, 0.7).tolist(), lambda: slow_nms(boxes, scores, 0.7)),
        f"roi_align-{rois}x{channels}ch-7x7": (
            lambda: ops.roi_align(features, roi_table, 7, 1 / 16, 2, True),
            lambda: slow_roi_align(features, roi_table, 7, 1 / 16, 2, True)),
        f"roi_pool-{rois}x{channels}ch-7x7": (
            lambda: ops.roi_pool(features, roi_table, 7, 1 / 16),
            lambda: slow_roi_pool(features, roi_table, 7, 1 / 16)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--proposals", type=int, default=2000)
    parser.add_argument("--rois", type=int, default=128)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for variant, (fast, slow) in cases(args.proposals, args.rois, args.channels).items():
        load = os.getloadavg()[0]
        expected, slow_seconds = timed(slow, 1)
        got, seconds = timed(fast, args.repeats)
        same = got == expected if isinstance(got, list) else torch.allclose(got, expected, atol=1e-5)
        if not same:
            raise SystemExit(f"{variant}: cnnkit's result differs from the loop's; not timing a wrong answer")
        print(f"{variant:>28}: {seconds * 1000:8.2f} ms   loop {slow_seconds:7.2f} s   {slow_seconds / seconds:7.0f}x")
        if not args.no_record:
            record("detect_ops", variant, "seconds", round(seconds, 5), baseline="python-loop",
                   baseline_value=round(slow_seconds, 3), ratio=round(slow_seconds / seconds, 1), runs=args.repeats,
                   threads=args.threads, load_average=[round(load, 2), round(os.getloadavg()[0], 2)],
                   note="same inputs, results checked equal first; best of runs for cnnkit, one run of the loop; "
                        "2-core machine shared with other jobs")


if __name__ == "__main__":
    main()
