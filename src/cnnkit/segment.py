"""Semantic segmentation with U-Net (Ronneberger et al. 2015; the notes, seeds 004, "U-Net") or a fully
convolutional network (Long et al. 2015, ``fcn8s``/``fcn16s``/``fcn32s``): a pixel-to-pixel network trained through
the one loop with cross-entropy plus Dice loss, judged by mean IoU, per-class IoU and Dice.

    data = load_segmentation_data("shapes")          # or "canvas-mnist", "segfolder:PATH" (images/ + masks/)
    model = create_model("unet", num_classes=4, in_channels=3, padding=True, base_channels=16, batch_norm=True)
    Trainer(model, data, TrainConfig(epochs=8, optimizer="adam", lr=3e-3), task=SegmentationTask(4)).fit()
    write_overlay(image, predict_mask(model, image, mean, std), "overlay.png")
    iou_report(confusion, data.classes)              # per-class IoU and their mean, from a pixel confusion matrix

IoU convention: a class's IoU is TP / (TP + FP + FN) over all pixels of the split; a class absent from both the
truth and the prediction has no IoU (0 / 0: None in reports) and is left out of the mean, as in
``scores_from_confusion`` and scikit-learn's ``jaccard_score(labels=present classes)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from .data.augment import normalize
from .data.canvas import load_canvas
from .data.catalog import GENERATED
from .data.datasets import DatasetBundle, TensorImageDataset, channel_stats
from .data.masks import SEGFOLDER_PREFIX, load_segmentation_folder
from .data.synthetic import synthetic_shapes
from .errors import CnnkitError, ShapeError
from .train.checkpoint import atomic_write_text
from .train.tasks import Task

# Overlay colours, class 0 (background) left uncoloured. Eleven or more entries: the canvas sets have the
# background and ten classes, and a class that wrapped round to entry 0 would be drawn as background.
PALETTE = torch.tensor([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
                        [0, 128, 128], [170, 110, 40], [128, 0, 0], [170, 255, 195], [128, 128, 0]],
                       dtype=torch.float32)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice coefficient 2|P∩T| / (|P| + |T|) (Milletari et al. 2016), with
    softmax probabilities for P; it weighs small classes as much as the background, which cross-entropy does not."""
    num_classes = logits.shape[1]
    probs = logits.float().softmax(1)
    one_hot = F.one_hot(targets, num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    total = probs.sum(dims) + one_hot.sum(dims)
    return 1 - ((2 * intersection + eps) / (total + eps)).mean()


def class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """Each class's IoU, TP / (TP + FP + FN), from a (true x predicted) pixel-count matrix; NaN for a class absent
    from both truth and prediction (0 / 0)."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    return torch.where(union > 0, true_positive / union.clamp_min(1), torch.nan)


def scores_from_confusion(confusion: torch.Tensor) -> dict[str, float]:
    """Mean IoU, mean Dice (over classes that occur in the targets or predictions) and pixel accuracy from a
    (true x predicted) pixel-count matrix."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    false_positive = confusion.sum(0) - true_positive
    false_negative = confusion.sum(1) - true_positive
    iou = class_iou(confusion)
    present = ~iou.isnan()
    dice = 2 * true_positive / (2 * true_positive + false_positive + false_negative).clamp_min(1)
    return {"miou": iou[present].mean().item(), "dice": dice[present].mean().item(),
            "pixel_acc": (true_positive.sum() / confusion.sum().clamp_min(1)).item()}


def iou_report(confusion: torch.Tensor, classes: list[str]) -> dict:
    """mIoU, pixel accuracy and each class's IoU by name (None where the class is absent from truth and
    prediction alike, and then not in the mean), from a (true x predicted) pixel-count matrix."""
    if confusion.shape != (len(classes), len(classes)):
        raise ShapeError(f"a confusion matrix of {tuple(confusion.shape)} does not fit {len(classes)} classes")
    iou = class_iou(confusion)
    return {**scores_from_confusion(confusion),
            "iou_per_class": {name: None if value != value else round(value, 6)
                              for name, value in zip(classes, iou.tolist())}}


class SegmentationTask(Task):
    """Inputs: images scaled to [0, 1] and normalised at their own size (no resizing: it would misalign the
    masks); targets: (N, H, W) class-index masks; loss: cross-entropy + ``dice_weight`` x Dice loss;
    metrics: mean IoU, Dice and pixel accuracy from a confusion matrix summed over the split. With the
    config's ``augment={"flip": True}`` image and mask are mirrored together."""

    name = "segmentation"
    higher_is_better = ("miou", "dice", "pixel_acc")

    def __init__(self, num_classes: int, dice_weight: float = 1.0, data: dict | None = None):
        # ``data``: the load_segmentation_data arguments, kept in the checkpoint so --eval and --resume rebuild
        # the very same split (generated sets are defined by their name, sizes and counts).
        self.num_classes, self.dice_weight, self.data = num_classes, dice_weight, data
        self.last_confusion: torch.Tensor | None = None

    def prepare(self, trainer, images, labels, train=False, generator=None):
        x = normalize(images.float().div_(255), trainer.preprocess.mean, trainer.preprocess.std)
        masks = labels
        if train and trainer.preprocess.augment.flip:
            flip = (torch.rand(len(x), generator=generator, device=x.device) < 0.5)[:, None, None]
            x = torch.where(flip[:, None], x.flip(-1), x)
            masks = torch.where(flip, masks.flip(-1), masks)
        return x, masks

    def loss(self, trainer, outputs, targets):
        if outputs.shape[-2:] != targets.shape[-2:]:
            raise ShapeError(f"the model's output is {tuple(outputs.shape[-2:])} but the masks are "
                             f"{tuple(targets.shape[-2:])}; build the U-Net with padding=True for same-size output")
        loss = F.cross_entropy(outputs.float(), targets)
        return loss + self.dice_weight * dice_loss(outputs, targets) if self.dice_weight else loss

    def metrics(self, outputs, targets):
        predicted = outputs.detach().argmax(1)
        index = targets.flatten() * self.num_classes + predicted.flatten()
        confusion = torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)
        return {"confusion": confusion}

    def summarize(self, sums, count):
        # The split's matrix is kept for the per-class report (finish, evaluate_segmentation); the epoch rows
        # hold the scalar means only.
        self.last_confusion = sums["confusion"].detach().cpu()
        return scores_from_confusion(sums["confusion"])

    def finish(self, trainer, wall_seconds: float) -> dict:
        """summary.json as every task writes it, plus the test split's IoU of each class."""
        summary = super().finish(trainer, wall_seconds)  # its last evaluation is the test split's
        report = iou_report(self.last_confusion, list(trainer.data.classes))
        summary["test_iou_per_class"] = report["iou_per_class"]
        if trainer.out and trainer.is_main:
            atomic_write_text(trainer.out / "summary.json", json.dumps(summary, indent=2, default=str))
        return summary

    def describe(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes, "dice_weight": self.dice_weight,
                **({"data": self.data} if self.data else {})}


def _seed_of(name: str) -> int:
    text = name.split(":", 1)[1] if ":" in name else "0"
    if not text.isdigit():
        raise CnnkitError(f"segmentation data {name!r}: the seed after ':' must be a whole number, e.g. "
                          f"{name.split(':', 1)[0]}:3")
    return int(text)


def load_segmentation_data(name: str, image_size: int | None = None, num_train: int = 2000,
                           num_test: int = 400) -> DatasetBundle:
    """The data a segmenter trains on, as a bundle whose labels are (N, H, W) class-index masks:
    ``shapes`` or ``shapes:SEED`` (the synthetic dataset); ``canvas-mnist`` or ``canvas-fashion-mnist``
    (``:SEED`` too; objects on cluttered canvases, :mod:`cnnkit.data.canvas`, with their semantic masks:
    0 background, 1 + the object's class); or ``segfolder:PATH`` (image/mask folders)."""
    base = name.split(":", 1)[0]
    if base == "shapes":
        return synthetic_shapes(num_train, num_test, image_size or 64, _seed_of(name))
    if base in GENERATED and base.startswith("canvas-"):
        canvas = load_canvas(base, num_train, num_test, image_size or 64, seed=_seed_of(name))
        splits = {role: TensorImageDataset(split.images, split.semantic.long(), list(canvas.classes))
                  for role, split in (("train", canvas.train), ("test", canvas.test))}
        mean, std = channel_stats(splits["train"].images)
        return DatasetBundle(canvas.name, splits["train"], splits["test"], list(canvas.classes), mean, std)
    if name.startswith(SEGFOLDER_PREFIX):
        return load_segmentation_folder(name[len(SEGFOLDER_PREFIX):], image_size)
    raise CnnkitError(f"unknown segmentation data {name!r}; expected 'shapes', 'shapes:SEED', 'canvas-mnist', "
                      f"'canvas-fashion-mnist' (each with an optional ':SEED') or '{SEGFOLDER_PREFIX}PATH' (a folder "
                      "with images/ and masks/).")


def evaluate_segmentation(trainer, dataset=None) -> dict:
    """The loss, mIoU, Dice, pixel accuracy and per-class IoU of the trainer's model on ``dataset`` (default:
    the test split)."""
    result = trainer.evaluate(dataset)
    return {**result, "iou_per_class": iou_report(trainer.task.last_confusion,
                                                  list(trainer.data.classes))["iou_per_class"]}


@torch.no_grad()
def predict_mask(model: torch.nn.Module, image: torch.Tensor, mean, std, multiple: int = 16) -> torch.Tensor:
    """Class indices (H, W) for one uint8 (C, H, W) image of any size: reflect-padded to a multiple of 16 (the
    padded U-Net's four 2x2 max-pools; an FCN pads itself), segmented, cropped back."""
    model.eval()
    x = normalize(image.float().div(255)[None], mean, std)
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(h, w) > max(pad_h, pad_w) else "replicate")
    logits = model(x)
    if logits.shape[-2:] != x.shape[-2:]:
        raise ShapeError("this U-Net is unpadded (its output is smaller than its input); segment with a model "
                         "trained with --model-arg padding=true")
    return logits[0, :, :h, :w].argmax(0)


def overlay(image: torch.Tensor, mask: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """The image (uint8 C,H,W; grey is shown as RGB) with each non-background class tinted in its colour."""
    rgb = image.float().expand(3, -1, -1) if image.shape[0] == 1 else image.float()
    colours = PALETTE[mask % len(PALETTE)].permute(2, 0, 1)
    tinted = torch.where(mask[None] > 0, (1 - alpha) * rgb + alpha * colours, rgb)
    return tinted.round().clamp(0, 255).to(torch.uint8)


def write_overlay(image: torch.Tensor, mask: torch.Tensor, path: str | Path, alpha: float = 0.5,
                  class_names: list[str] | None = None) -> Path:
    """The overlay as a PNG; with ``class_names`` (index 0 the background), a legend beneath it: each class's
    colour swatch and name, the classes present in the mask first."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(overlay(image, mask, alpha).permute(1, 2, 0).numpy())
    if class_names is not None:
        picture = _with_legend(picture, mask, class_names)
    picture.save(path)
    return path


def _with_legend(picture, mask: torch.Tensor, class_names: list[str]):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=11)
    present = set(torch.unique(mask).tolist())
    # background first (it is left untinted), then the classes present, then the absent ones (marked so)
    order = [0] + sorted(range(1, len(class_names)), key=lambda c: (c not in present, c))
    entries = [(PALETTE[c % len(PALETTE)] if c else None,
                f"{class_names[c]}" + (" (untinted)" if c == 0 else "" if c in present else " (none)"))
               for c in order]
    line = 16
    measure = ImageDraw.Draw(picture)
    width = max(picture.width, 26 + max(int(measure.textlength(text, font=font)) for _, text in entries))
    legend = Image.new("RGB", (width, picture.height + 4 + line * len(entries)), "white")
    legend.paste(picture, (0, 0))
    draw = ImageDraw.Draw(legend)
    for row, (colour, text) in enumerate(entries):
        top = picture.height + 4 + row * line
        fill = tuple(int(v) for v in colour.tolist()) if colour is not None else (255, 255, 255)
        draw.rectangle((4, top + 2, 16, top + 13), fill=fill, outline=(0, 0, 0))
        draw.text((22, top + 8), text, fill="black", font=font, anchor="lm")
    return legend


__all__ = ["SegmentationTask", "class_iou", "dice_loss", "evaluate_segmentation", "iou_report",
           "load_segmentation_data", "overlay", "predict_mask", "scores_from_confusion", "write_overlay"]
