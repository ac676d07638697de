"""Rate-distortion of the learned codec (compress_factorized, Ballé et al. 2017/2018) beside JPEG, on CIFAR-10.

    CNNKIT_DATA=../shared/datasets python benchmarks/compression_rd.py [--lambdas 0.003,0.01,0.03]

For each lambda, trains the model through the one loop (CompressionTask, loss lambda 255^2 MSE + bpp) on
--train-images training images for one epoch, then measures it on held-out test images: the images are tiled
8 x 8 into 256x256 mosaics (so a file's fixed costs, our 28-byte header or JPEG's ~600 bytes of tables, do not
swamp a 32x32 image), each mosaic is written as a real .cnk file and decoded, and bits per pixel come from the
file sizes. JPEG (Pillow, 4:2:0, optimised Huffman tables) encodes the same mosaics at several qualities; its
PSNR at the learned codec's bpp is interpolated along its curve. Prints a table, writes
docs/images/compression_rd.png and appends every figure to benchmarks/results.jsonl.

The training images are the lossy JPEG copy of CIFAR-10 (quality 75), so the test images carry JPEG's own
8x8 artefacts, which favours JPEG near that quality (see JPEG_QUALITIES).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import time
from pathlib import Path

import numpy as np
import torch

from cnnkit import TrainConfig, Trainer, create_model, load_dataset
from cnnkit.compress import CompressionTask, compress_image, decompress

from record import record

REPO = Path(__file__).resolve().parents[1]
# Up to 60: the test images are themselves JPEG (quality 75) files, and re-encoding them at 75 reproduces them
# almost exactly (~40 dB, more than at 90), which is no measure of JPEG; below that its curve is monotone.
JPEG_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60)


def mosaics(images: torch.Tensor, tiles: int = 8) -> list[torch.Tensor]:
    """(N, C, 32, 32) uint8 -> N / tiles^2 images of (C, 32 tiles, 32 tiles)."""
    per = tiles * tiles
    out = []
    for start in range(0, len(images) - per + 1, per):
        block = images[start:start + per]
        c, h, w = block.shape[1:]
        out.append(block.view(tiles, tiles, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, tiles * h, tiles * w))
    return out


def psnr_uint8(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return 10 * np.log10(255**2 / max(mse, 1e-12))


def jpeg(image: torch.Tensor, quality: int) -> tuple[int, torch.Tensor]:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality, optimize=True)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return len(buffer.getvalue()), torch.from_numpy(decoded.copy()).permute(2, 0, 1)


def evaluate_codec(encode_decode, images: list[torch.Tensor]) -> dict:
    """Mean bpp (file bytes x 8 / pixels) and PSNR (dB) over ``images``, with the decoded images."""
    bpps, psnrs, decoded = [], [], []
    for image in images:
        size, out = encode_decode(image)
        bpps.append(8 * size / (image.shape[1] * image.shape[2]))
        psnrs.append(psnr_uint8(out, image))
        decoded.append(out)
    return {"bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs)), "decoded": decoded}


def train(bundle, lmbda: float, args) -> tuple[torch.nn.Module, dict, float, float]:
    torch.manual_seed(0)
    model = create_model("compress_factorized", channels=args.channels, latent_channels=args.latent_channels)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="adam", lr=args.lr,
                         weight_decay=0.0, grad_clip=1.0, schedule="onecycle", eval_batch_size=256, progress=False)
    wall, cpu = time.perf_counter(), time.process_time()
    summary = Trainer(model, bundle, config, task=CompressionTask(lmbda)).fit()
    return model.eval(), summary, time.perf_counter() - wall, time.process_time() - cpu


def figure(rows: list[dict], jpeg_rows: list[dict], example: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 4))
    ax = fig.add_subplot(1, 2, 1)
    ax.plot([r["bpp"] for r in jpeg_rows], [r["psnr"] for r in jpeg_rows], "s--", color="grey",
            label="JPEG (Pillow, optimised), quality " + ",".join(str(r["quality"]) for r in jpeg_rows))
    ax.plot([r["bpp"] for r in rows], [r["psnr"] for r in rows], "o-", label="compress_factorized (files)")
    for r in rows:
        ax.annotate(f"λ={r['lmbda']:g}", (r["bpp"], r["psnr"]), textcoords="offset points", xytext=(4, -12),
                    fontsize=8)
    ax.set(xlabel="bits per pixel (from file sizes)", ylabel="PSNR (dB, RGB)",
           title="held-out CIFAR-10 test images (8x8 mosaics)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 2, 2)
    crop = slice(0, 96)
    strip = torch.cat([img[:, crop, crop] for img in example["images"]], dim=2)
    ax.imshow(strip.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(" | ".join(example["titles"]), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lambdas", default="0.003,0.01,0.03")
    parser.add_argument("--train-images", type=int, default=30000, help="training images per model (of 50,000)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--channels", type=int, default=64, help="N (128 in the paper)")
    parser.add_argument("--latent-channels", type=int, default=96, help="M (192 in the paper)")
    parser.add_argument("--test-images", type=int, default=512, help="held-out images: validation and mosaics")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("CNNKIT_THREADS", "1")))
    bundle = load_dataset("cifar10")
    bundle = dataclasses.replace(bundle, train=bundle.train.subset(range(args.train_images)),
                                 test=bundle.test.subset(range(args.test_images)))
    tiles = mosaics(bundle.test.images)
    jpeg_rows = []
    for quality in JPEG_QUALITIES:
        result = evaluate_codec(lambda image, q=quality: jpeg(image, q), tiles)
        jpeg_rows.append({"quality": quality, **result})
    jpeg_bpp = np.array([r["bpp"] for r in jpeg_rows])
    jpeg_psnr = np.array([r["psnr"] for r in jpeg_rows])

    rows = []
    for lmbda in (float(v) for v in args.lambdas.split(",")):
        model, summary, wall, cpu = train(bundle, lmbda, args)
        coded = evaluate_codec(lambda image, m=model: (len(data := compress_image(m, image)), decompress(m, data)),
                               tiles)
        with torch.no_grad():
            estimate = np.mean([-torch.log2(model(image.float()[None] / 255).likelihoods).sum().item()
                                / (image.shape[1] * image.shape[2]) for image in tiles])
        jpeg_at_bpp = float(np.interp(coded["bpp"], jpeg_bpp, jpeg_psnr))
        jpeg_bpp_at_psnr = float(np.interp(coded["psnr"], jpeg_psnr, jpeg_bpp))
        rows.append({"lmbda": lmbda, **coded, "estimated_bpp": float(estimate), "jpeg_psnr": jpeg_at_bpp,
                     "jpeg_bpp": jpeg_bpp_at_psnr, "wall": wall, "cpu": cpu, "test_psnr_32": summary["test_psnr"],
                     "test_bpp_32": summary["test_bpp"]})
        variant = f"compress_factorized N={args.channels} M={args.latent_channels} lambda={lmbda:g}"
        common = dict(data="cifar10-jpeg", runs=1, train_images=args.train_images * args.epochs,
                      train_seconds=round(wall, 1), train_cpu_seconds=round(cpu, 1), eval_images=len(tiles) * 64)
        record("compression_rd", variant, "psnr_db", round(coded["psnr"], 3), bpp=round(coded["bpp"], 4),
               estimated_bpp=round(float(estimate), 4), baseline="jpeg-pillow at the same bpp",
               baseline_value=round(jpeg_at_bpp, 3), **common)
        record("compression_rd", variant, "jpeg_bpp_ratio", round(jpeg_bpp_at_psnr / coded["bpp"], 3),
               note="JPEG's bpp for the same PSNR over the learned codec's", **common)
    for r in jpeg_rows:
        record("compression_rd", f"jpeg-pillow quality {r['quality']}", "psnr_db", round(r["psnr"], 3),
               bpp=round(r["bpp"], 4), data="cifar10-jpeg", runs=1, eval_images=len(tiles) * 64)

    print(f"\n{'codec':<34} {'bpp (files)':>11} {'est. bpp':>8} {'PSNR dB':>8} {'JPEG dB @bpp':>12} "
          f"{'JPEG bpp @dB':>12} {'train s (cpu)':>14}")
    for r in rows:
        print(f"{'compress_factorized λ=' + format(r['lmbda'], 'g'):<34} {r['bpp']:>11.3f} {r['estimated_bpp']:>8.3f} "
              f"{r['psnr']:>8.2f} {r['jpeg_psnr']:>12.2f} {r['jpeg_bpp']:>12.3f} {r['wall']:>7.0f} ({r['cpu']:.0f})")
    for r in jpeg_rows:
        print(f"{'JPEG quality ' + str(r['quality']):<34} {r['bpp']:>11.3f} {'':>8} {r['psnr']:>8.2f}")

    middle = rows[len(rows) // 2]
    nearest = min(jpeg_rows, key=lambda r: abs(r["bpp"] - middle["bpp"]))
    example = {"images": [tiles[0], middle["decoded"][0], nearest["decoded"][0]],
               "titles": ["original", f"learned λ={middle['lmbda']:g} ({middle['bpp']:.2f} bpp)",
                          f"JPEG q{nearest['quality']} ({nearest['bpp']:.2f} bpp)"]}
    figure(rows, jpeg_rows, example, REPO / "docs" / "images" / "compression_rd.png")


if __name__ == "__main__":
    main()
