"""DeepDream on the pretrained EfficientNet-Lite0 (issue 26, the notes' "Generated using the Inceptionism
approach"): a photo beside its dreams at a low and a high stage, and how much each stage's activation RMS rose.

It runs what ``cnnkit viz dream`` runs (cnnkit.viz.commands.dream), so the picture is the command's:

    cnnkit viz dream efficientnet_lite0:imagenet golden_gate.jpg --layer stage3 stage6 --size 384 --step-size 0.012

and copies ``dream.png`` to docs/images/deepdream.png. Per layer it appends the activation RMS of the dream
(value), that of the photo (baseline_value) and their ratio to benchmarks/results.jsonl. One thread, about half a
minute on an idle core of the 2-core machine.

    python benchmarks/deepdream.py                       # the README's picture and figures
    python benchmarks/deepdream.py --no-record --size 224   # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

from cnnkit.models import create_model  # noqa: E402
from cnnkit.viz import commands  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (or beside its parent, for a git worktree one folder further down).
PHOTO = next((root / "shared" / "images" / "content" / "golden_gate.jpg" for root in (REPO.parent, REPO.parents[1])
              if (root / "shared").is_dir()), REPO.parent / "shared" / "images" / "content" / "golden_gate.jpg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--layer", nargs="+", dest="layers", default=["stage3", "stage6"])
    parser.add_argument("--size", type=int, default=384, help="longer side of the photo in pixels")
    parser.add_argument("--steps", type=int, default=20, help="steps per octave")
    parser.add_argument("--octaves", type=int, default=4)
    parser.add_argument("--octave-scale", type=float, default=1.4)
    parser.add_argument("--jitter", type=int, default=32)
    parser.add_argument("--step-size", type=float, default=0.012)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "deepdream.png")
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = create_model("efficientnet_lite0", pretrained="imagenet").eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # only the image is differentiated
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        (results,) = commands.dream(model, [args.photo], scratch, args.layers, args.steps, args.octaves,
                                    args.octave_scale, args.jitter, args.step_size, args.seed, size=args.size)
        seconds = time.perf_counter() - start
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(scratch) / "dream.png", args.out)
    load_after = os.getloadavg()
    height, width = results[0].images.shape[-2:]
    print(f"{args.photo.name} at {width}x{height}, {args.octaves} octaves of {args.steps} steps: {seconds:.1f} s on "
          f"{args.threads} thread(s); picture {args.out}")
    for result in results:
        before, after = float(result.start_norm[0]), float(result.final_norm[0])
        print(f"  {result.layer}: activation RMS {before:.3f} on the photo, {after:.3f} on the dream "
              f"({after / before:.2f}x)")
        if not args.no_record:
            record("deepdream", f"efficientnet_lite0-{result.layer}", "activation_rms", round(after, 3),
                   baseline="the photo", baseline_value=round(before, 3), ratio=round(after / before, 2),
                   image=f"{args.photo.name} {width}x{height}", steps=args.steps, octaves=args.octaves,
                   octave_scale=args.octave_scale, jitter=args.jitter, step_size=args.step_size, seed=args.seed,
                   threads=args.threads, total_seconds=round(seconds, 1), runs=1,
                   load_average=[round(load_before[0], 2), round(load_after[0], 2)],
                   note="both layers' dreams together in total_seconds")


if __name__ == "__main__":
    main()
