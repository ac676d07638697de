"""Rate-distortion of the learned codec (compress_factorized, Ballé et al. 2017/2018) beside JPEG, on CIFAR-10.

    CNNKIT_DATA=../shared/datasets python benchmarks/compression_rd.py [--lambdas 0.003,0.01,0.03]

For each lambda, trains the model through the one loop (CompressionTask, loss lambda 255^2 MSE + bpp) on
--train-images training images for one epoch (the checkpoint goes to runs/compress-cifar10-lambdaL), then
writes every held-out test image (32x32) as a real .cnk file, decodes it, and measures PSNR and bits per pixel
from the file sizes. JPEG (Pillow, 4:2:0, optimised Huffman tables) codes the same images at several
qualities; its PSNR at the learned codec's rate is interpolated along its curve.

On a 32x32 image a file's fixed costs dominate: our header is 28 bytes (0.22 bpp), JPEG's markers and tables
~300 bytes. The comparison therefore uses the coded data alone (our payload; JPEG's entropy-coded scan), and
the whole-file figures are printed and recorded beside it. The same models are also run on 256x256 mosaics of
8x8 test images, which shows how a codec trained on 32x32 images alone carries over to larger pictures.

The training images are the lossy JPEG copy of CIFAR-10 (quality 75), so the test images carry JPEG's own
8x8 artefacts, which favours JPEG near that quality (see JPEG_QUALITIES). Prints a table, writes
docs/images/compression_rd.png and appends every figure to benchmarks/results.jsonl.
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
from cnnkit.compress.bitstream import HEADER_BYTES

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


def jpeg_scan_bytes(data: bytes) -> int:
    """Bytes of a baseline JPEG's entropy-coded scan: after the start-of-scan header, before end-of-image."""
    position = 2  # after SOI
    while position < len(data):
        marker, length = data[position + 1], int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xDA:
            return len(data) - (position + 2 + length) - 2
        position += 2 + length
    raise ValueError("no start-of-scan marker")


def jpeg(image: torch.Tensor, quality: int) -> tuple[int, int, torch.Tensor]:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality, optimize=True)
    data = buffer.getvalue()
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return len(data), jpeg_scan_bytes(data), torch.from_numpy(decoded.copy()).permute(2, 0, 1)


def learned(model, tables):
    def encode_decode(image: torch.Tensor) -> tuple[int, int, torch.Tensor]:
        data = compress_image(model, image, tables)
        return len(data), len(data) - HEADER_BYTES, decompress(model, data, tables)

    return encode_decode


def evaluate_codec(encode_decode, images) -> dict:
    """Mean bits per pixel (whole files, and coded data only) and PSNR (dB) over ``images``."""
    file_bpp, data_bpp, psnrs, decoded = [], [], [], []
    for image in images:
        size, coded, out = encode_decode(image)
        pixels = image.shape[1] * image.shape[2]
        file_bpp.append(8 * size / pixels)
        data_bpp.append(8 * coded / pixels)
        psnrs.append(psnr_uint8(out, image))
        decoded.append(out)
    return {"file_bpp": float(np.mean(file_bpp)), "bpp": float(np.mean(data_bpp)), "psnr": float(np.mean(psnrs)),
            "decoded": decoded}


def train(bundle, lmbda: float, args) -> tuple[torch.nn.Module, dict, float, float]:
    torch.manual_seed(0)
    model = create_model("compress_factorized", channels=args.channels, latent_channels=args.latent_channels)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="adam", lr=args.lr,
                         weight_decay=0.0, grad_clip=1.0, schedule="onecycle", eval_batch_size=256, progress=False)
    wall, cpu = time.perf_counter(), time.process_time()
    out = REPO / "runs" / f"compress-cifar10-lambda{lmbda:g}"
    summary = Trainer(model, bundle, config, out=out, task=CompressionTask(lmbda), overwrite=True).fit()
    return model.eval(), summary, time.perf_counter() - wall, time.process_time() - cpu


def figure(rows: list[dict], jpeg_rows: list[dict], example: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnkit.viz import plots

    fig = plt.figure(figsize=(12, 4.2))
    ax = fig.add_subplot(1, 2, 1)
    ax.plot([r["bpp"] for r in jpeg_rows], [r["psnr"] for r in jpeg_rows], "s-", color="grey",
            label="JPEG (Pillow, optimised), coded scan, q " + ",".join(str(r["quality"]) for r in jpeg_rows))
    ax.plot([r["file_bpp"] for r in jpeg_rows], [r["psnr"] for r in jpeg_rows], "s:", color="grey", alpha=0.5,
            label="JPEG, whole files")
    ax.plot([r["bpp"] for r in rows], [r["psnr"] for r in rows], "o-", color="C0", label="compress_factorized, payload")
    ax.plot([r["file_bpp"] for r in rows], [r["psnr"] for r in rows], "o:", color="C0", alpha=0.5,
            label="compress_factorized, whole .cnk files")
    for r in rows:
        ax.annotate(f"λ={r['lmbda']:g}", (r["bpp"], r["psnr"]), textcoords="offset points", xytext=(4, -12),
                    fontsize=8)
    ax.set(xlabel="bits per pixel (from the files)", ylabel="PSNR (dB, RGB)", xlim=(0, 4),
           title="held-out CIFAR-10 test images, 32x32, one file each")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    grid = torch.cat([torch.cat(list(images), dim=2) for images in example["images"]], dim=1)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title("rows: " + " | ".join(example["titles"]), fontsize=8)
    plots.save(fig, path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lambdas", default="0.003,0.01,0.03")
    parser.add_argument("--train-images", type=int, default=30000, help="training images per model (of 50,000)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--channels", type=int, default=64, help="N (128 in the paper)")
    parser.add_argument("--latent-channels", type=int, default=96, help="M (192 in the paper)")
    parser.add_argument("--test-images", type=int, default=512, help="held-out test images (a multiple of 64)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("CNNKIT_THREADS", "1")))
    bundle = load_dataset("cifar10")
    bundle = dataclasses.replace(bundle, train=bundle.train.subset(range(args.train_images)),
                                 test=bundle.test.subset(range(args.test_images)))
    images, tiles = list(bundle.test.images), mosaics(bundle.test.images)
    jpeg_rows = []
    for quality in JPEG_QUALITIES:
        result = evaluate_codec(lambda image, q=quality: jpeg(image, q), images)
        mosaic = evaluate_codec(lambda image, q=quality: jpeg(image, q), tiles)
        jpeg_rows.append({"quality": quality, **result, "mosaic_bpp": mosaic["file_bpp"],
                          "mosaic_psnr": mosaic["psnr"]})
    jpeg_bpp, jpeg_psnr = np.array([r["bpp"] for r in jpeg_rows]), np.array([r["psnr"] for r in jpeg_rows])
    mosaic_bpp = np.array([r["mosaic_bpp"] for r in jpeg_rows])
    mosaic_psnr = np.array([r["mosaic_psnr"] for r in jpeg_rows])

    rows = []
    for lmbda in (float(v) for v in args.lambdas.split(",")):
        model, summary, wall, cpu = train(bundle, lmbda, args)
        tables = model.entropy_model.coding_tables()
        coded = evaluate_codec(learned(model, tables), images)
        mosaic = evaluate_codec(learned(model, tables), tiles)
        row = {"lmbda": lmbda, **coded, "estimated_bpp": summary["test_bpp"], "wall": wall, "cpu": cpu,
               "jpeg_psnr": float(np.interp(coded["bpp"], jpeg_bpp, jpeg_psnr)),
               "jpeg_bpp": float(np.interp(coded["psnr"], jpeg_psnr, jpeg_bpp)),
               "mosaic_bpp": mosaic["file_bpp"], "mosaic_psnr": mosaic["psnr"],
               "mosaic_jpeg_psnr": float(np.interp(mosaic["file_bpp"], mosaic_bpp, mosaic_psnr))}
        rows.append(row)
        variant = f"compress_factorized N={args.channels} M={args.latent_channels} lambda={lmbda:g}"
        common = dict(data="cifar10-jpeg", runs=1, train_images=args.train_images * args.epochs,
                      train_seconds=round(wall, 1), train_cpu_seconds=round(cpu, 1))
        record("compression_rd", variant, "psnr_db", round(row["psnr"], 3), bpp=round(row["bpp"], 4),
               file_bpp=round(row["file_bpp"], 4), estimated_bpp=round(row["estimated_bpp"], 4),
               baseline="jpeg-pillow scan at the same bpp", baseline_value=round(row["jpeg_psnr"], 3),
               eval_images=len(images), **common)
        record("compression_rd", variant, "jpeg_bpp_ratio", round(row["jpeg_bpp"] / row["bpp"], 3),
               note="JPEG scan bpp for the same PSNR over the learned payload bpp", eval_images=len(images), **common)
        record("compression_rd", variant, "mosaic_psnr_db", round(row["mosaic_psnr"], 3),
               bpp=round(row["mosaic_bpp"], 4), baseline="jpeg-pillow file at the same bpp",
               baseline_value=round(row["mosaic_jpeg_psnr"], 3), eval_images=len(tiles), **common)
    for r in jpeg_rows:
        record("compression_rd", f"jpeg-pillow quality {r['quality']}", "psnr_db", round(r["psnr"], 3),
               bpp=round(r["bpp"], 4), file_bpp=round(r["file_bpp"], 4), mosaic_psnr_db=round(r["mosaic_psnr"], 3),
               mosaic_bpp=round(r["mosaic_bpp"], 4), data="cifar10-jpeg", runs=1, eval_images=len(images))

    print(f"\n{len(images)} held-out 32x32 test images, one file each; bpp of the coded data (whole files in brackets)")
    print(f"{'codec':<26} {'bpp':>6} {'(file)':>7} {'est.':>6} {'PSNR':>6} {'JPEG@bpp':>8} {'JPEG bpp@PSNR':>13} "
          f"{'mosaic bpp':>10} {'PSNR':>6} {'JPEG':>6} {'train s (cpu)':>14}")
    for r in rows:
        print(f"{'learned λ=' + format(r['lmbda'], 'g'):<26} {r['bpp']:>6.3f} {r['file_bpp']:>7.3f} "
              f"{r['estimated_bpp']:>6.3f} {r['psnr']:>6.2f} {r['jpeg_psnr']:>8.2f} {r['jpeg_bpp']:>13.3f} "
              f"{r['mosaic_bpp']:>10.3f} {r['mosaic_psnr']:>6.2f} {r['mosaic_jpeg_psnr']:>6.2f} "
              f"{r['wall']:>7.0f} ({r['cpu']:.0f})")
    for r in jpeg_rows:
        print(f"{'JPEG quality ' + str(r['quality']):<26} {r['bpp']:>6.3f} {r['file_bpp']:>7.3f} {'':>6} "
              f"{r['psnr']:>6.2f} {'':>8} {'':>13} {r['mosaic_bpp']:>10.3f} {r['mosaic_psnr']:>6.2f}")

    middle = rows[len(rows) // 2]
    nearest = min(jpeg_rows, key=lambda r: abs(r["bpp"] - middle["bpp"]))
    example = {"images": [images[:10], middle["decoded"][:10], nearest["decoded"][:10]],
               "titles": ["original", f"learned λ={middle['lmbda']:g} ({middle['bpp']:.2f} bpp)",
                          f"JPEG q{nearest['quality']} ({nearest['bpp']:.2f} bpp)"]}
    figure(rows, jpeg_rows, example, REPO / "docs" / "images" / "compression_rd.png")


if __name__ == "__main__":
    main()
