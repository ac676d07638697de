"""Denoising autoencoders on MNIST and Fashion-MNIST: PSNR and SSIM of noisy vs denoised test images, and the
effect of the bottleneck size, all trained through the one loop.

    CNNKIT_DATA=../shared/datasets python benchmarks/denoising.py [--epochs 1 --bottlenecks 1,4,16,64]

Runs (1) MNIST, Gaussian sigma 0.3, one model per bottleneck size; (2) bottleneck 16 on Fashion-MNIST with
Gaussian noise and on both datasets with salt-and-pepper noise (20% of the pixels). Prints a table, writes
docs/images/denoising_bottleneck.png (PSNR against bottleneck size, and example digits) and appends every
figure to benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from cnnkit import TrainConfig, Trainer, create_model, load_dataset
from cnnkit.denoise import DenoisingTask, add_noise, denoising_report

from record import record

REPO = Path(__file__).resolve().parents[1]


def train(dataset: str, noise: str, level: float, bottleneck: int, epochs: int, bundles: dict):
    bundle = bundles.setdefault(dataset, load_dataset(dataset))
    torch.manual_seed(0)
    model = create_model("conv_autoencoder", bottleneck_channels=bottleneck)
    config = TrainConfig(epochs=epochs, batch_size=128, optimizer="adam", lr=3e-3, weight_decay=0.0,
                         progress=False)
    start = time.perf_counter()
    Trainer(model, bundle, config, task=DenoisingTask(noise, level)).fit()
    seconds = time.perf_counter() - start
    report = denoising_report(model, bundle.test.images, noise, level)
    return model, report, seconds


def figure(rows: list[dict], examples: torch.Tensor, bottlenecks: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnkit.viz import plots

    sweep = [r for r in rows if r["sweep"]]
    fig = plt.figure(figsize=(10, 3.4))
    ax = fig.add_subplot(1, 2, 1)
    ax.plot([r["bottleneck"] for r in sweep], [r["denoised_psnr"] for r in sweep], "o-", label="denoised")
    ax.axhline(sweep[0]["noisy_psnr"], color="grey", ls="--", label="noisy input")
    ax.set(xscale="log", xlabel="bottleneck channels (7x7 maps each)", ylabel="PSNR (dB)",
           title="MNIST, Gaussian noise sigma 0.3")
    ax.set_xticks([r["bottleneck"] for r in sweep], [str(r["bottleneck"]) for r in sweep])
    ax.grid(alpha=0.3)
    ax.legend()
    ax = fig.add_subplot(1, 2, 2)
    ax.imshow(examples, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title("rows: clean, noisy, then bottleneck " + ", ".join(map(str, bottlenecks)), fontsize=9)
    plots.save(fig, path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--bottlenecks", default="1,4,16,64")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("CNNKIT_THREADS", "1")))
    bottlenecks = [int(b) for b in args.bottlenecks.split(",")]
    bundles: dict = {}
    rows = []
    runs = [("mnist", "gaussian", 0.3, b, True) for b in bottlenecks]
    runs += [("fashion-mnist", "gaussian", 0.3, 16, False), ("mnist", "salt-and-pepper", 0.2, 16, False),
             ("fashion-mnist", "salt-and-pepper", 0.2, 16, False)]
    digits = None
    strips = []
    for dataset, noise, level, bottleneck, sweep in runs:
        model, report, seconds = train(dataset, noise, level, bottleneck, args.epochs, bundles)
        rows.append({"dataset": dataset, "noise": noise, "level": level, "bottleneck": bottleneck, "sweep": sweep,
                     "seconds": seconds, **report})
        variant = f"conv_autoencoder bottleneck {bottleneck}, {noise} {level}, {args.epochs} epochs"
        for metric in ("denoised_psnr", "denoised_ssim", "psnr_gain_db"):
            baseline = "noisy input" if metric != "psnr_gain_db" else None
            baseline_value = report[metric.replace("denoised", "noisy")] if baseline else None
            record("denoising_autoencoder", variant, metric, round(report[metric], 3), data=dataset,
                   baseline=baseline, baseline_value=round(baseline_value, 3) if baseline else None,
                   train_seconds=round(seconds, 1), runs=1)
        if sweep:
            with torch.no_grad():
                clean = bundles["mnist"].test.images[:8].float() / 255
                noisy = add_noise(clean, "gaussian", 0.3, torch.Generator().manual_seed(7))
                if digits is None:
                    digits = [clean, noisy]
                strips.append(model.eval()(noisy))
    print(f"\n{'dataset':<14} {'noise':<18} {'bottleneck':>10} {'PSNR noisy':>10} {'denoised':>9} {'gain':>7} "
          f"{'SSIM noisy':>10} {'denoised':>9} {'train s':>8}")
    for r in rows:
        print(f"{r['dataset']:<14} {r['noise'] + ' ' + str(r['level']):<18} {r['bottleneck']:>10} "
              f"{r['noisy_psnr']:>10.2f} {r['denoised_psnr']:>9.2f} {r['psnr_gain_db']:>+7.2f} "
              f"{r['noisy_ssim']:>10.3f} {r['denoised_ssim']:>9.3f} {r['seconds']:>8.0f}")
    grid = torch.cat([torch.cat(list(t[:, 0]), dim=1) for t in digits + strips], dim=0)
    figure(rows, grid, bottlenecks, REPO / "docs" / "images" / "denoising_bottleneck.png")


if __name__ == "__main__":
    main()
