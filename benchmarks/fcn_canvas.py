"""FCN-8s (Long et al. 2015) beside U-Net on canvas-mnist's semantic masks: test mIoU, each class's IoU, training
time and inference images/s, both trained through the one loop for the same number of epochs on the same canvases.

    CNNKIT_THREADS=1 python benchmarks/fcn_canvas.py [--epochs 6 --num-train 1000 --backbone resnet20]
    CNNKIT_THREADS=1 python benchmarks/fcn_canvas.py --resume --epochs 8    # continue (or extend) those runs

Training time is the sum of the epochs' own times (metrics.csv), so a run continued with --resume counts only
the epochs it trained.

Writes a run folder per model under --out, a picture of test canvases (input / truth / FCN / U-Net) to
docs/images/fcn_canvas.png, prints the figures and appends them to benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from PIL import Image

from cnnkit import TrainConfig, Trainer, create_model
from cnnkit.data.augment import normalize
from cnnkit.segment import PALETTE, SegmentationTask, evaluate_segmentation, load_segmentation_data

from record import record

ZOOM = 3


@torch.no_grad()
def images_per_second(model, bundle, mean, std, batch_size: int = 50) -> float:
    """Inference throughput on the test split in evaluation mode (after one warm-up batch)."""
    model.eval()
    x = normalize(bundle.test.images.float().div(255), mean, std)
    model(x[:batch_size])
    start = time.perf_counter()
    for index in range(0, len(x), batch_size):
        model(x[index:index + batch_size])
    return len(x) / (time.perf_counter() - start)


@torch.no_grad()
def predictions(model, images, mean, std) -> torch.Tensor:
    model.eval()
    return model(normalize(images.float().div(255), mean, std)).argmax(1)


def colour(mask: torch.Tensor) -> Image.Image:
    rgb = PALETTE[mask % len(PALETTE)].to(torch.uint8).numpy()
    return Image.fromarray(rgb).resize((mask.shape[1] * ZOOM, mask.shape[0] * ZOOM), Image.NEAREST)


def picture(bundle, masks: dict[str, torch.Tensor], path: Path, count: int = 6) -> None:
    """Rows: input, truth, then each model's prediction; one column per test canvas."""
    from PIL import ImageDraw

    size = bundle.test.images.shape[-1] * ZOOM
    rows = [("input", [Image.fromarray(bundle.test.images[i, 0].numpy()).convert("RGB").resize(
        (size, size), Image.NEAREST) for i in range(count)]),
        ("truth", [colour(bundle.test.labels[i]) for i in range(count)])]
    rows += [(name, [colour(mask[i]) for i in range(count)]) for name, mask in masks.items()]
    label_width, gap = 70, 4
    sheet = Image.new("RGB", (label_width + count * (size + gap), len(rows) * (size + gap) + 22), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (name, tiles) in enumerate(rows):
        draw.text((4, row * (size + gap) + size // 2), name, fill="black")
        for column, tile in enumerate(tiles):
            sheet.paste(tile, (label_width + column * (size + gap), row * (size + gap)))
    x = label_width  # the legend: each class's colour and name
    for index in range(1, len(bundle.classes)):
        draw.rectangle((x, sheet.height - 16, x + 10, sheet.height - 6),
                       fill=tuple(int(v) for v in PALETTE[index % len(PALETTE)].tolist()))
        draw.text((x + 13, sheet.height - 17), bundle.classes[index], fill="black")
        x += 20 + 7 * len(bundle.classes[index])
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=400)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--backbone", default="resnet20")
    parser.add_argument("--variant", default="fcn8s", choices=["fcn8s", "fcn16s", "fcn32s"])
    parser.add_argument("--base-channels", type=int, default=16, help="U-Net width")
    parser.add_argument("--models", default="fcn,unet", help="which to train: fcn, unet or both")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-fcn-canvas"))
    parser.add_argument("--resume", action="store_true",
                        help="continue the runs in --out from their last completed epoch (to --epochs in all)")
    parser.add_argument("--note", default="", help="appended to the recorded variant (e.g. how a run was cut)")
    parser.add_argument("--picture", type=Path,
                        default=Path(__file__).parents[1] / "docs" / "images" / "fcn_canvas.png")
    args = parser.parse_args()
    threads = int(os.environ.get("CNNKIT_THREADS", "1"))
    torch.set_num_threads(threads)

    data = {"name": "canvas-mnist", "image_size": args.image_size, "num_train": args.num_train,
            "num_test": args.num_test}
    bundle = load_segmentation_data(**data)
    num_classes, channels = len(bundle.classes), bundle.image_shape[0]
    builders = {
        "fcn": (f"{args.variant}-{args.backbone}", lambda: create_model(
            args.variant, num_classes=num_classes, in_channels=channels, backbone=args.backbone)),
        "unet": (f"unet-base{args.base_channels}-padded-bn", lambda: create_model(
            "unet", num_classes=num_classes, in_channels=channels, padding=True, base_channels=args.base_channels,
            batch_norm=True)),
    }
    described = (f"canvas-mnist(seed=0) {args.num_train} train / {args.num_test} test, {args.image_size}px, "
                 f"11 classes")
    load = os.getloadavg()[0]
    masks = {}
    for key in args.models.split(","):
        name, build = builders[key]
        torch.manual_seed(0)
        model = build()
        # canvases are never mirrored: a flipped digit is another glyph
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="adam", lr=args.lr,
                             weight_decay=0.0, schedule="cosine", progress=False, num_threads=threads)
        trainer = Trainer(model, bundle, config, out=args.out / name, overwrite=not args.resume,
                          task=SegmentationTask(num_classes, data=data))
        trainer.fit(resume=args.resume)
        seconds = sum(row["seconds"] for row in trainer.history)  # the epochs' own times, across resumes
        result = evaluate_segmentation(trainer)
        speed = images_per_second(model, bundle, trainer.preprocess.mean, trainer.preprocess.std)
        variant = (f"{name}, ce+dice, adam {args.lr} cosine, {trainer.epoch} epochs, batch {args.batch_size}"
                   + (f" ({args.note})" if args.note else ""))
        extra = dict(data=described, train_seconds=round(seconds, 1), runs=1, threads=threads,
                     load_average=round(max(load, os.getloadavg()[0]), 1),
                     params=sum(p.numel() for p in model.parameters()))
        record("fcn_canvas_segmentation", variant, "miou", round(result["miou"], 4),
               iou_per_class={k: None if v is None else round(v, 4) for k, v in result["iou_per_class"].items()},
               **extra)
        record("fcn_canvas_segmentation", variant, "pixel_acc", round(result["pixel_acc"], 4), **extra)
        record("fcn_canvas_segmentation", variant, "inference_images_per_second", round(speed, 1), **extra)
        print(f"{name}: test mIoU {result['miou']:.4f}, pixel accuracy {result['pixel_acc']:.4f}, trained in "
              f"{seconds:.0f} s, {speed:.0f} images/s; per class: " + ", ".join(
                  f"{k} {v:.3f}" for k, v in result["iou_per_class"].items() if v is not None))
        masks[name.split("-")[0]] = predictions(model, bundle.test.images[:6], trainer.preprocess.mean,
                                                trainer.preprocess.std)
    picture(bundle, masks, args.picture)
    print(args.picture)


if __name__ == "__main__":
    main()
