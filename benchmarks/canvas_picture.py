"""The picture of the offline detection set for the README: test canvases of canvas-mnist and canvas-fashion-mnist
(seed 0, 64 px, shown 3x) with their exact boxes and labels drawn over them, and below each its semantic mask in
the segmentation palette. Nothing is measured, so nothing goes to results.jsonl.

    python benchmarks/canvas_picture.py            # docs/images/canvas_detection.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).parent))

from cnnkit.data.canvas import load_canvas  # noqa: E402

PALETTE = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]
ZOOM = 3


def panel(split, index: int, classes: list[str]) -> Image.Image:
    image, target = split[index]
    size = image.shape[-1] * ZOOM
    picture = Image.fromarray(image[0].numpy()).convert("RGB").resize((size, size), Image.NEAREST)
    draw = ImageDraw.Draw(picture)
    for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
        x1, y1, x2, y2 = (v * ZOOM for v in box)
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=PALETTE[label], width=2)
        draw.text((x1 + 2, y1 + 1), classes[label][:8], fill=PALETTE[label])
    colours = torch.tensor(PALETTE, dtype=torch.uint8)[split.semantic[index].long()]
    mask = Image.fromarray(colours.numpy()).resize((size, size), Image.NEAREST)
    both = Image.new("RGB", (size, 2 * size + 4), (255, 255, 255))
    both.paste(picture, (0, 0))
    both.paste(mask, (0, size + 4))
    return both


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-set", type=int, default=4)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs/images/canvas_detection.png"))
    args = parser.parse_args()
    panels = []
    for name in ("canvas-mnist", "canvas-fashion-mnist"):
        data = load_canvas(name, num_train=1, num_test=args.per_set, seed=0)
        panels += [panel(data.test, i, data.classes) for i in range(args.per_set)]
    width, height = panels[0].size
    sheet = Image.new("RGB", (len(panels) * (width + 4) - 4, height), (255, 255, 255))
    for k, picture in enumerate(panels):
        sheet.paste(picture, (k * (width + 4), 0))
    sheet.save(args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
