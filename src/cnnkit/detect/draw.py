"""Detections drawn on their image: each box in its class's colour with "label score" above it (PIL ImageDraw).

    picture = draw_detections(image, detections, classes, scale=4)     # image: uint8 (C, H, W)
    picture.save("detections.png")
"""

from __future__ import annotations

from pathlib import Path

import torch

# Distinct colours by class (class 0, the background, is never drawn); Kelly's / Tableau-like, readable on grey.
COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


def draw_detections(image: torch.Tensor, detections: dict, class_names: list[str] | None = None, scale: int = 1,
                    min_score: float = 0.0, truth: torch.Tensor | None = None):
    """A PIL RGB image of ``image`` (uint8 C x H x W; grey shown as RGB) enlarged ``scale`` times (nearest, so
    the pixels stay visible), with every detection scoring at least ``min_score`` drawn as its box and "name
    score"; ``truth`` (n, 4), when given, is drawn first as thin white boxes."""
    from PIL import Image, ImageDraw, ImageFont

    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    picture = Image.fromarray(rgb.permute(1, 2, 0).contiguous().numpy())
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(9, 3 * scale))
    if truth is not None:
        for box in (truth * scale).tolist():
            draw.rectangle(box, outline=(255, 255, 255), width=1)
    keep = detections["scores"] >= min_score
    for box, score, label in zip((detections["boxes"][keep] * scale).tolist(), detections["scores"][keep].tolist(),
                                 detections["labels"][keep].tolist()):
        colour = COLOURS[(int(label) - 1) % len(COLOURS)]
        draw.rectangle(box, outline=colour, width=max(1, scale // 2))
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        text = f"{name} {score:.2f}"
        left, top = box[0], max(0, box[1] - font.size - 2)
        width = draw.textlength(text, font=font)
        draw.rectangle((left, top, left + width + 2, top + font.size + 2), fill=colour)
        draw.text((left + 1, top + 1), text, fill=(0, 0, 0), font=font)
    return picture


def write_detections(image: torch.Tensor, detections: dict, path: str | Path, class_names=None, scale: int = 1,
                     min_score: float = 0.0) -> Path:
    """:func:`draw_detections` saved as a PNG (folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_detections(image, detections, class_names, scale, min_score).save(path)
    return path


def detection_grid(images: torch.Tensor, detections: list[dict], class_names=None, scale: int = 4,
                   min_score: float = 0.5, columns: int = 4, truths: list[torch.Tensor] | None = None):
    """Several images with their detections, side by side in rows of ``columns`` (for a README picture)."""
    from PIL import Image

    tiles = [draw_detections(image, found, class_names, scale, min_score, truths[i] if truths else None)
             for i, (image, found) in enumerate(zip(images, detections))]
    width, height, gap = tiles[0].width, tiles[0].height, 4
    rows = -(-len(tiles) // columns)
    grid = Image.new("RGB", (columns * (width + gap) - gap, rows * (height + gap) - gap), "white")
    for index, tile in enumerate(tiles):
        grid.paste(tile, ((index % columns) * (width + gap), (index // columns) * (height + gap)))
    return grid


__all__ = ["COLOURS", "detection_grid", "draw_detections", "write_detections"]
