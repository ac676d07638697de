"""Inpainting that respects what it was given (issue 29): the pix2pix generator reads the image *and* its hole
mask, and its output is composited into the hole only, so every known pixel is returned unchanged. Compared,
on the same held-out crops and the same seeded holes, with the masked input itself (the hole mid-grey), three
classical fills (OpenCV's Telea and Navier-Stokes, scikit-image's biharmonic) and the L1-only U-Net (the same
generator without the discriminator, Isola et al.'s ablation).

    CNNKIT_DATA=../shared/datasets python benchmarks/inpainting.py [--epochs 3 --width 16 --hole 24 --prefill grey]

The generators' input holds a classical fill in the hole (--prefill, Navier-Stokes by default; grey for the
neutral hole) beside the mask channel; the generator adds a correction there, starting from none (its last layer
is zero-initialised), so training starts from the classical answer and learns what it misses.

Data: random 64x64 crops (horizontally flipped half the time) of the 432 colour training images of BSDS500
(bsd/cbsd432) to train on; --test-crops-per-image fixed random crops of each of the 68 held-out CBSD68 images to
score on (never the reverse). Each crop gets one --hole x --hole square hole at a random place (seeded), the same
for every method. Scores on [0, 1] pixels: PSNR and SSIM (cnnkit.denoise.ssim, Wang et al.'s 11x11 Gaussian
window, checked against scikit-image in tests/test_inpainting.py) inside the hole (PSNR over the hole's pixels;
SSIM on the hole's bounding box, the hole itself for these squares: only windows inside the hole count) and on
the whole crop. Writes docs/images/inpainting.png (rows: masked input, Telea, L1-only, pix2pix, ground truth)
and appends every figure to benchmarks/results.jsonl. Sized for a 2-core CPU, one thread.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from cnnkit import TrainConfig, Trainer
from cnnkit.data.datasets import DatasetBundle, TensorImageDataset, channel_stats
from cnnkit.data.formats import IMAGE_SUFFIXES, read_image
from cnnkit.denoise import psnr, ssim
from cnnkit.errors import DataError
from cnnkit.gan import save_grid
from cnnkit.translate import (EVAL_SEED, PIX2PIX_TRAINING, Pix2PixTask, classical_fill, create_translator, hole_psnr,
                              hole_ssim, mask_images, square_masks, translate_batch, PREFILLS)

from record import record

REPO = Path(__file__).resolve().parents[1]
CLASSICAL = (("Telea (OpenCV)", "telea"), ("Navier-Stokes (OpenCV)", "navier-stokes"),
             ("biharmonic (scikit-image)", "biharmonic"))
LEARNED = (("L1-only U-Net", 0.0), ("pix2pix", 1.0))
EXAMPLES = 8


def random_crops(folder: Path, per_image: int, size: int, seed: int, flip: bool) -> torch.Tensor:
    """``per_image`` random ``size`` x ``size`` uint8 crops of every image in ``folder`` (sorted names, seeded)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no images; set CNNKIT_DATA to the shared datasets folder (it holds bsd/)")
    generator = torch.Generator().manual_seed(seed)
    crops = []
    for path in files:
        image = read_image(path, 3)
        height, width = image.shape[-2:]
        for _ in range(per_image):
            top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
            crop = image[:, top:top + size, left:left + size]
            if flip and torch.rand((), generator=generator) < 0.5:
                crop = crop.flip(-1)
            crops.append(crop)
    return torch.stack(crops)


def load_crops(args) -> DatasetBundle:
    root = Path(os.environ.get("CNNKIT_DATA", REPO.parent / "shared" / "datasets")) / "bsd"
    train = random_crops(root / "cbsd432", args.crops_per_image, args.size, seed=0, flip=True)
    test = random_crops(root / "cbsd68", args.test_crops_per_image, args.size, seed=1, flip=False)
    mean, std = channel_stats(train)
    def split(images):  # one dummy class: the targets are the images themselves
        return TensorImageDataset(images, torch.zeros(len(images), dtype=torch.long), ["image"])

    return DatasetBundle(f"cbsd432-crops{args.size}", split(train), split(test), ["image"], mean, std,
                         note=f"test: cbsd68, {args.test_crops_per_image} crops per image")


def scores(estimate: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> dict:
    return {"hole_psnr": hole_psnr(estimate, target, hole).mean().item(),
            "hole_ssim": hole_ssim(estimate, target, hole).mean().item(),
            "psnr": psnr(estimate, target).mean().item(), "ssim": ssim(estimate, target).mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="crop side in pixels")
    parser.add_argument("--hole", type=int, default=24, help="side of the square hole in pixels")
    parser.add_argument("--crops-per-image", type=int, default=30, help="training crops per CBSD432 image")
    parser.add_argument("--test-crops-per-image", type=int, default=4, help="test crops per CBSD68 image")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=16, help="generator and discriminator width (64 in the paper)")
    parser.add_argument("--depth", type=int, default=6, help="U-Net depth (6: 64 px down to 1x1)")
    parser.add_argument("--prefill", default="navier-stokes", choices=PREFILLS,
                        help="what the hole holds in the generator's input: grey, or a classical fill to correct")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "benchmark-inpainting")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("CNNKIT_THREADS", "1")))

    bundle = load_crops(args)
    targets = bundle.test.images.float() / 255
    holes = square_masks(len(targets), args.size, args.size, args.hole, torch.Generator().manual_seed(EVAL_SEED))
    grey = mask_images(targets, holes)[:, :-1]  # the image with a mid-grey hole
    inputs = mask_images(targets, holes, args.prefill)  # the generators': the prefilled image and the hole's mask
    results = {"masked input": (grey, 0.0, 0.0)}
    for variant, method in CLASSICAL:
        start, cpu_start = time.perf_counter(), time.process_time()
        filled = classical_fill(targets, holes, method)
        results[variant] = (filled, time.perf_counter() - start, time.process_time() - cpu_start)
    trained = {}
    for variant, weight in LEARNED:
        torch.manual_seed(0)
        model = create_translator("inpaint", 3, args.width, depth=args.depth)
        config = TrainConfig(**{**PIX2PIX_TRAINING, "epochs": args.epochs, "progress": False,
                                "eval_batch_size": 512})
        start, cpu_start = time.perf_counter(), time.process_time()
        Trainer(model, bundle, config, out=args.out / variant.split()[0],
                task=Pix2PixTask("inpaint", adversarial_weight=weight, mask_size=args.hole, prefill=args.prefill),
                overwrite=True).fit()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        outputs = torch.cat([translate_batch(model, inputs[i:i + 256]) for i in range(0, len(inputs), 256)])
        # The composite, checked rather than trusted: the known pixels are the input's, bit for bit.
        assert torch.equal(outputs[~holes.expand_as(outputs)], targets[~holes.expand_as(targets)])
        results[variant] = (outputs, seconds, cpu_seconds)
        trained[variant] = model

    table = {variant: scores(estimate, targets, holes) for variant, (estimate, _, _) in results.items()}
    common = dict(data="cbsd432-crops -> cbsd68-crops", runs=1, crop=args.size, hole=args.hole, prefill=args.prefill,
                  train_images=len(bundle.train), test_images=len(bundle.test), epochs=args.epochs, width=args.width,
                  load=os.getloadavg()[0].__round__(2))
    best_other = {}
    for metric in ("hole_psnr", "hole_ssim", "psnr", "ssim"):
        others = {v: s[metric] for v, s in table.items() if v != "pix2pix"}
        best_other[metric] = max(others, key=others.get)
    for variant, (_, seconds, cpu_seconds) in results.items():
        for metric, value in table[variant].items():
            extra = {}
            if variant == "pix2pix":
                rival = best_other[metric]
                extra = {"baseline": rival, "baseline_value": round(table[rival][metric], 4)}
            timing = {"seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1)} if seconds else {}
            record("inpainting", variant, metric, round(value, 4 if "ssim" in metric else 2), **timing, **extra,
                   **common)

    shown = slice(0, EXAMPLES)
    pictures = [grey[shown], results["Telea (OpenCV)"][0][shown], results["L1-only U-Net"][0][shown],
                results["pix2pix"][0][shown], targets[shown]]
    save_grid(torch.cat(pictures), REPO / "docs" / "images" / "inpainting.png", columns=EXAMPLES, scale=3,
              row_labels=["masked input", "Telea", "L1-only", "pix2pix", "ground truth"])

    print(f"\n{len(bundle.test)} CBSD68 crops {args.size}x{args.size}, {args.hole}x{args.hole} holes; "
          f"trained on {len(bundle.train)} CBSD432 crops, {args.epochs} epochs, width {args.width}, "
          f"hole prefilled with {args.prefill}")
    print(f"{'method':<26} {'hole PSNR':>9} {'hole SSIM':>9} {'PSNR':>6} {'SSIM':>6} {'s':>6} {'CPU s':>6}")
    for variant, row in table.items():
        _, seconds, cpu_seconds = results[variant]
        print(f"{variant:<26} {row['hole_psnr']:>9.2f} {row['hole_ssim']:>9.4f} {row['psnr']:>6.2f} "
              f"{row['ssim']:>6.4f} {seconds:>6.0f} {cpu_seconds:>6.0f}")


if __name__ == "__main__":
    main()
