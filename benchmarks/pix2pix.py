"""pix2pix against the L1-only U-Net (Isola et al. 2017, Table 1's ablation: the same generator without the
discriminator) on three translations built from our data: colorize (CIFAR-10 JPEG copy, grey -> RGB), edges
(Fashion-MNIST, binary Sobel edges -> item) and inpaint (CIFAR-10, a 12x12 grey square and its mask -> the image,
composited into the hole; benchmarks/inpainting.py measures inpainting on natural images against classical fills).

    CNNKIT_DATA=../shared/datasets python benchmarks/pix2pix.py [--epochs 5 --train-subset 3000 --width 32]

Sized for a 2-core CPU (one thread): balanced training subsets, half the paper's widths (--width 64 for the
paper's), the 70x70 PatchGAN. L1 (mean absolute error), PSNR and SSIM on [0, 1] pixels over --test-subset test
images (a fixed random choice, fixed inpainting squares, seeded test-time dropout), beside the same scores of
the input itself (grey copied to RGB, edges, masked image). Writes docs/images/pix2pix_<task>.png (rows, labelled
on the left: input, target, the L1-only output, the pix2pix output) and appends every figure to
benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from cnnkit import TrainConfig, Trainer
from cnnkit.data.datasets import balanced_subset
from cnnkit.denoise import psnr, ssim
from cnnkit.gan import save_grid
from cnnkit.translate import (EVAL_SEED, PIX2PIX_TRAINING, Pix2PixTask, create_translator, load_translation_data,
                              make_input, translate_batch)

from record import record

REPO = Path(__file__).resolve().parents[1]
VARIANTS = (("l1-only U-Net", 0.0), ("pix2pix", 1.0))
EXAMPLES = 8


def scores(estimate: torch.Tensor, target: torch.Tensor) -> dict:
    if estimate.shape[1] != target.shape[1]:
        estimate = estimate.expand_as(target)
    return {"l1": (estimate - target).abs().mean().item(), "psnr": psnr(estimate, target).mean().item(),
            "ssim": ssim(estimate, target).mean().item()}


def colourfulness(images: torch.Tensor) -> float:
    """Hasler and Süsstrunk's (2003) colourfulness of RGB images in [0, 1], on their 0-255 scale, mean over the
    images: sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2), rg = R - G, yb = (R + G) / 2 - B.
    Grey images score 0; the L1-only U-Net's averaged colours score low (Isola et al. §4.2)."""
    red, green, blue = (images.float() * 255).flatten(2).unbind(1)
    rg, yb = red - green, (red + green) / 2 - blue
    spread = (rg.std(1) ** 2 + yb.std(1) ** 2).sqrt()
    return (spread + 0.3 * (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()).mean().item()


def run(kind: str, args) -> list[dict]:
    bundle = load_translation_data(kind)
    bundle.train = balanced_subset(bundle.train, args.train_subset)
    pick = torch.randperm(len(bundle.test), generator=torch.Generator().manual_seed(0))[: args.test_subset]
    bundle.test = bundle.test.subset(pick)
    channels = bundle.image_shape[0]
    targets = bundle.test.images[:EXAMPLES].float() / 255
    inputs = make_input(kind, targets, torch.Generator().manual_seed(1))
    shown = inputs[:, :channels]  # inpainting's last input channel is the hole mask, not a picture
    rows, pictures = [], [shown.expand(-1, channels, -1, -1), targets]
    target_all = bundle.test.images.float() / 255
    eval_inputs = make_input(kind, target_all, torch.Generator().manual_seed(EVAL_SEED))  # as the evaluation's
    for variant, weight in VARIANTS:
        torch.manual_seed(0)
        model = create_translator(kind, channels, args.width)
        config = TrainConfig(**{**PIX2PIX_TRAINING, "epochs": args.epochs, "progress": False,
                                "eval_batch_size": args.test_subset})
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer = Trainer(model, bundle, config, out=args.out / kind / variant.split()[0],
                          task=Pix2PixTask(kind, adversarial_weight=weight), overwrite=True)
        summary = trainer.fit()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        rows.append({"task": kind, "variant": variant, "seconds": seconds, "cpu_seconds": cpu_seconds,
                     **{k: summary[f"test_{k}"] for k in ("l1", "psnr", "ssim")}})
        pictures.append(translate_batch(model, inputs))
        if kind == "colorize":
            rows[-1]["colourfulness"] = colourfulness(translate_batch(model, eval_inputs))
    # The input as an answer (what the model starts from), on the evaluation's own inputs (one batch of
    # --test-subset images, squares drawn from the evaluation seed).
    baseline = scores(eval_inputs[:, :channels], target_all)
    common = dict(data=bundle.name + ("-jpeg" if "lossy" in bundle.note else ""), runs=1,
                  train_images=len(bundle.train), test_images=len(bundle.test), epochs=args.epochs, width=args.width)
    for row in rows:
        other = next(r for r in rows if r is not row)
        for metric in ("l1", "psnr", "ssim"):
            extra = {"baseline": other["variant"], "baseline_value": round(other[metric], 4)} \
                if row["variant"] == "pix2pix" else {"input_value": round(baseline[metric], 4)}
            record(f"pix2pix_{kind}", row["variant"], metric, round(row[metric], 4),
                   train_seconds=round(row["seconds"], 1), cpu_seconds=round(row["cpu_seconds"], 1), **extra, **common)
        if "colourfulness" in row:
            record(f"pix2pix_{kind}", row["variant"], "colourfulness", round(row["colourfulness"], 2),
                   target_value=round(colourfulness(target_all), 2), **common)
    rows.append({"task": kind, "variant": "input itself", "seconds": 0.0, "cpu_seconds": 0.0, **baseline})
    save_grid(torch.cat(pictures), REPO / "docs" / "images" / f"pix2pix_{kind}.png", columns=EXAMPLES, scale=3,
              row_labels=["input", "target", *(f"{variant} output" for variant, _ in VARIANTS)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="colorize,edges,inpaint")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-subset", type=int, default=3000)
    parser.add_argument("--test-subset", type=int, default=1000)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "benchmark-pix2pix")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("CNNKIT_THREADS", "1")))
    rows = [row for kind in args.tasks.split(",") for row in run(kind, args)]
    for row in rows:
        if "colourfulness" in row:
            print(f"{row['task']} {row['variant']}: colourfulness {row['colourfulness']:.1f}")
    print(f"\n{'task':<10} {'variant':<15} {'L1':>7} {'PSNR dB':>8} {'SSIM':>6} {'train s':>8} {'CPU s':>6}")
    for r in rows:
        print(f"{r['task']:<10} {r['variant']:<15} {r['l1']:>7.4f} {r['psnr']:>8.2f} {r['ssim']:>6.3f} "
              f"{r['seconds']:>8.0f} {r['cpu_seconds']:>6.0f}")


if __name__ == "__main__":
    main()
