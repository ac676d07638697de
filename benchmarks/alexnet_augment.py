"""AlexNet's data augmentation (Krizhevsky et al. 2012, section 4.1) in cnnkit.data.augment: what it does to a photo,
and what batching it on tensors saves.

The picture (docs/images/alexnet_augment.jpg): one photo's views under the Inception/ResNet random-resized crop
(8-100 % of the area), AlexNet's 224 crops of 256 with mirroring, PCA lighting with the paper's alpha std 0.1 and
with 1.0 (ten times the paper's, to make the colour axes visible), and the ten test crops. The colour principal
components are those of the Kodak set (24 photos), computed with colour_principal_components.

The timing: a batch of images to training views (random-resized crop, flip, PCA lighting) with the batched
functions, against the same functions called once per image in a Python loop (the per-sample Dataset + transforms
pattern), at 256x256 -> 224 (ImageNet-like) and 32x32 -> 32 (CIFAR-like). Appends both to benchmarks/results.jsonl.
On one CPU core the batch wins where per-call overhead dominates (small images) and loses where a whole batch of
large images no longer fits the caches and each op streams it from memory.

    python benchmarks/alexnet_augment.py
    python benchmarks/alexnet_augment.py --batch 64 --repeats 2 --no-record
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

from cnnkit.data.augment import (colour_principal_components, pca_lighting, random_flip,  # noqa: E402
                                 random_resized_crop, ten_crop)
from cnnkit.data.image_io import read_image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "datasets" / "kodak24"
ALEXNET_SCALE = ((224 / 256) ** 2,) * 2  # a 224 square of a 256 square, no resampling


def square(image: torch.Tensor, side: int = 256) -> torch.Tensor:
    """Shorter side to ``side``, then the centre square (AlexNet's "rescaled ... then cropped out the central
    256x256 patch"), as floats in [0, 1]."""
    h, w = image.shape[-2:]
    scale = side / min(h, w)
    resized = F.interpolate(image[None].float() / 255, size=(round(h * scale), round(w * scale)), mode="bilinear",
                            antialias=True, align_corners=False)[0]
    top, left = (resized.shape[1] - side) // 2, (resized.shape[2] - side) // 2
    return resized[:, top:top + side, left:left + side].clamp(0, 1)


def training_views(x, components, generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), lighting=0.1, out_side=224):
    x = random_resized_crop(x, (out_side, out_side), scale, ratio, generator)
    x = random_flip(x, generator)
    return pca_lighting(x, components, lighting, generator) if lighting else x


def picture(photo: torch.Tensor, components, out: Path) -> Path:
    from cnnkit.viz import plots

    batch = photo[None].expand(8, -1, -1, -1).contiguous()
    g = torch.Generator().manual_seed(0)
    centre = batch[..., 16:240, 16:240]
    rows = {"random-resized crop (8-100 % of the area) + flip": training_views(batch, components, g, lighting=0),
            "AlexNet: 224 of 256 + flip": training_views(batch, components, g, ALEXNET_SCALE, (1, 1), 0),
            "PCA lighting, alpha std 0.1 (the paper)": pca_lighting(centre, components, 0.1, g),
            "PCA lighting, alpha std 1.0 (10x, to see it)": pca_lighting(centre, components, 1.0, g),
            "ten-crop test views (8 of the 10: four corners, centre, three of their mirror images)":
                torch.stack(ten_crop(photo[None], 224)[:8])[:, 0]}
    figure, axes = plots.subplots(len(rows), columns=1, panel_size=2.0)
    figure.set_size_inches(16, 2.3 * len(rows))
    for axis, (title, views) in zip(axes, rows.items()):
        axis.imshow(plots.tile(views.clamp(0, 1), columns=8, padding=4))
        axis.set_title(title, fontsize=10, loc="left")
        axis.axis("off")
    png = plots.save(figure, out.with_suffix(".png"))
    from PIL import Image

    Image.open(png).convert("RGB").save(out, quality=80, optimize=True)  # a photo grid: JPEG keeps it small
    png.unlink()
    return out


def time_it(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--photo", type=Path, default=REPO / "docs" / "images" / "style_content.jpg")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "alexnet_augment.jpg")
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core, both ways: the comparison is of the work, not of the thread pool
    kodak = torch.stack([square(read_image(path, 3)) for path in sorted(KODAK.glob("*.png"))])
    components = colour_principal_components(kodak)
    print("Kodak colour principal components: eigenvalues", [f"{v:.5f}" for v in components.eigenvalues.tolist()])
    print("eigenvectors (columns):", components.eigenvectors.numpy().round(3).tolist())
    print(f"picture: {picture(square(read_image(args.photo, 3)), components, args.out)}")
    for side, out_side, count in ((256, 224, args.batch), (32, 32, 4 * args.batch)):
        images = kodak if side == 256 else F.interpolate(kodak, size=(side, side), mode="area")
        batch = images[torch.arange(count) % len(images)].contiguous()
        compare(batch, components, out_side, args.repeats, args.no_record)


def compare(batch: torch.Tensor, components, out_side: int, repeats: int, no_record: bool) -> None:
    """The batched training views against the same functions called once per image."""
    g = torch.Generator().manual_seed(0)
    count, side = len(batch), batch.shape[-1]
    load = os.getloadavg()[0]
    batched = time_it(lambda: training_views(batch, components, g, out_side=out_side), repeats)
    looped = time_it(lambda: [training_views(image[None], components, g, out_side=out_side) for image in batch],
                     repeats)
    load_after = os.getloadavg()[0]
    print(f"{count} images {side}x{side} -> {out_side}x{out_side} training views (crop, flip, lighting), 1 thread, "
          f"best of {repeats}: batched {batched * 1e3:.0f} ms ({count / batched:,.0f} img/s), per-image loop "
          f"{looped * 1e3:.0f} ms ({count / looped:,.0f} img/s), {looped / batched:.2f}x; load {load:.1f}")
    if not no_record:
        record("alexnet_augment", f"batched-{side}to{out_side}", "images_per_second", round(count / batched, 1),
               baseline="per-image loop", baseline_value=round(count / looped, 1), ratio=round(looped / batched, 2),
               runs=repeats, load_average=[round(load, 2), round(load_after, 2)], data="kodak24",
               note=f"{count} Kodak images at {side}x{side} -> {out_side} (random-resized crop, flip, PCA lighting), "
                    "float32, 1 thread, best of the runs; 2-core machine shared with other jobs")

if __name__ == "__main__":
    main()
