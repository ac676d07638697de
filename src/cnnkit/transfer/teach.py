"""A classifier of your own from a few images per class, in seconds: Teachable Machine's idea, done the notes'
way for very little data ("fit a linear classifier on features" of a frozen pretrained network).

    result = teach(images, labels, ["cat", "dog"], out="runs/teach-pets")   # images: uint8 (N, 3, 224, 224)
    result["accuracy"], result["confusion"]                                  # on the held-out images

Every image goes once through the pretrained network (EfficientNet-Lite0 by default), batched, and becomes its
pooled last-stage features (1,280 numbers). About 80 % of each class's images fit a logistic regression on
them (:func:`~cnnkit.transfer.probe.fit_linear_probe`: standardised features, its strength chosen by
cross-validated log-loss); the rest measure it. The regression is then folded into the network's own output
layer (:func:`~cnnkit.transfer.heads.set_linear_head`), so the result is an ordinary run folder: `cnnkit
predict RUN image.jpg`, `cnnkit eval RUN` (its images are kept in RUN/images/train and RUN/images/val, the
held-out ones in val) and `cnnkit serve` read it like a run the trainer wrote. Images are read as `cnnkit
predict` reads them: resized, whole, to the network's input size, so a prediction there matches the held-out
figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from ..card import card_of
from ..errors import CnnkitError, DataError
from ..models import create_model
from ..runs import claim_run_folder, save_model_checkpoint
from .features import extract_features
from .heads import set_linear_head
from .probe import fit_linear_probe

TEACH_MODEL, TEACH_WEIGHTS = "efficientnet_lite0", "imagenet"
HELD_OUT_FRACTION = 0.2
MIN_TRAINING_IMAGES = 3  # per class: the regression's strength is chosen by 3-fold cross-validation
FEATURE_BATCH = 16  # images per forward pass: progress moves often, activations stay small
# The strengths tried. Log-loss picks 1.0 for a few well-separated pictures and less for overlapping classes;
# the linear probe's default eight strengths took 14 s instead of 3.6 s for 48 pictures of 3 classes (2 busy
# cores), and on the pictures tried here the weakest of them were never chosen.
TEACH_C_VALUES = (0.01, 0.1, 1.0)


def held_out_split(labels: torch.Tensor, fraction: float = HELD_OUT_FRACTION,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, held-out indices), stratified: ``fraction`` of each class's images (rounded, at least
    one), drawn at random with ``seed``; each class keeps at least MIN_TRAINING_IMAGES for training."""
    generator = torch.Generator().manual_seed(seed)
    train, held_out = [], []
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten()
        count = len(members)
        test_count = max(1, round(fraction * count))
        if count - test_count < MIN_TRAINING_IMAGES:
            raise DataError(f"class {label} has {count} image(s); teaching needs at least "
                            f"{MIN_TRAINING_IMAGES + 1} per class ({MIN_TRAINING_IMAGES} to learn from, 1 to test).")
        members = members[torch.randperm(count, generator=generator)]
        held_out.append(members[:test_count])
        train.append(members[test_count:])
    return torch.cat(train).sort().values, torch.cat(held_out).sort().values


def pretrained_backbone(model_name: str = TEACH_MODEL, weights: str = TEACH_WEIGHTS) -> torch.nn.Module:
    """The pretrained network whose features are taught on (a fresh copy: its head is replaced)."""
    return create_model(model_name, pretrained=weights).eval()


def image_features(model: torch.nn.Module, images: torch.Tensor, batch_size: int = FEATURE_BATCH,
                   on_batch: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Pooled features of the stage below the classifier, ``batch_size`` images per pass; ``on_batch(done,
    total)`` after each pass (for a progress bar or a page)."""
    return extract_features(model, images, batch_size=batch_size, on_batch=on_batch)


def confusion_matrix(truth: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Rows: the true class; columns: the predicted one."""
    counts = torch.zeros(num_classes * num_classes, dtype=torch.long)
    counts.index_add_(0, truth * num_classes + predicted, torch.ones_like(truth))
    return counts.view(num_classes, num_classes).tolist()


def check_teaching_data(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise DataError(f"teach reads RGB images as a uint8 (N, 3, H, W) tensor, got {images.dtype} "
                        f"{tuple(images.shape)}.")
    if len(labels) != len(images):
        raise DataError(f"{len(images)} images but {len(labels)} labels; give one label per image.")
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(f"teach needs at least two classes with different names, got {list(classes)}.")
    missing = [name for index, name in enumerate(classes) if not (labels == index).any()]
    if missing or labels.min() < 0 or labels.max() >= len(classes):
        raise DataError(f"every class needs images and every label a class: no images for {missing or 'none'}, "
                        f"labels from {int(labels.min())} to {int(labels.max())} for {len(classes)} classes.")


def teach(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], out: str | Path | None = None, *,
          model: torch.nn.Module | None = None, held_out: float = HELD_OUT_FRACTION, seed: int = 0,
          on_progress: Callable[[str, dict], None] | None = None) -> dict:
    """Fit a linear head on a pretrained network's features of ``images`` (uint8 (N, 3, H, W), already at the
    network's input size) labelled ``labels`` (indices into ``classes``); save the network as a run folder in
    ``out`` when given. ``model``: the pretrained network (default: a fresh EfficientNet-Lite0 on ImageNet; its
    head is replaced). ``on_progress(stage, data)`` hears ("features", {"done", "total"}) after each batch and
    ("fitting", {...}) before the regression. Returns accuracy (%) and confusion matrix on the held-out images,
    the chosen C, the counts, the seconds spent, the model and the run folder."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    check_teaching_data(images, labels, classes)
    report = on_progress or (lambda stage, data: None)
    started = time.perf_counter()
    train, test = held_out_split(labels, held_out, seed)
    model = model if model is not None else pretrained_backbone()
    size = card_of(model).input_size
    if size is not None and tuple(images.shape[-2:]) != tuple(size):
        raise DataError(f"the images are {images.shape[-1]}x{images.shape[-2]} pixels; resize them whole to the "
                        f"network's {size[1]}x{size[0]} first, as 'cnnkit predict' will.")
    features = image_features(model, images, on_batch=lambda done, total: report("features",
                                                                                 {"done": done, "total": total}))
    extracted = time.perf_counter()
    report("fitting", {"train_images": len(train), "held_out_images": len(test), "features": features.shape[1]})
    # Chosen by log-loss: with a few images per class every strength is often 100 % accurate in cross-validation,
    # and accuracy would then keep the strongest regularisation, whose probabilities hardly leave 50 %.
    probe = fit_linear_probe(features[train], labels[train], features[test], labels[test], c_values=TEACH_C_VALUES,
                             seed=seed, scoring="neg_log_loss")
    set_linear_head(model, probe["weight"], probe["bias"])
    # The held-out answers of the folded layer, which is what predict and eval will run.
    predicted = (features[test] @ probe["weight"].T + probe["bias"]).argmax(1)
    accuracy = 100.0 * float((predicted == labels[test]).float().mean())
    result = {"accuracy": accuracy, "confusion": confusion_matrix(labels[test], predicted, len(classes)),
              "classes": list(classes), "C": probe["C"], "train_images": len(train), "held_out_images": len(test),
              "images_per_class": torch.bincount(labels, minlength=len(classes)).tolist(),
              "feature_seconds": extracted - started, "fit_seconds": time.perf_counter() - extracted,
              "model": model, "run_dir": None}
    if out is not None:
        result["run_dir"] = save_taught_run(out, model, images, labels, train, test, result)
    result["seconds"] = time.perf_counter() - started
    return result


def save_taught_run(out: str | Path, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    train: torch.Tensor, test: torch.Tensor, result: dict) -> Path:
    """The run folder: the images as lossless PNGs in images/train/<class>/ and images/val/<class>/ (the data
    `cnnkit eval` reads back), then checkpoint.safetensors + checkpoint.json. Class folders sort in class order
    because the classes are sorted names (an image folder's classes are its sorted sub-folders)."""
    out = Path(out)
    classes = result["classes"]
    if list(classes) != sorted(classes):
        raise CnnkitError(f"a taught run's classes must be in sorted order (as image folders list them), got "
                          f"{list(classes)}.")
    claim_run_folder(out, resume_hint=None)  # refuses a folder holding a run, a file, a disk that cannot be written
    folder = out / "images"
    for split, indices in (("train", train), ("val", test)):
        for index in indices.tolist():
            target = folder / split / classes[int(labels[index])]
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index].permute(1, 2, 0).numpy()).save(target / f"{index:04d}.png")
    card = card_of(model)
    height, width = images.shape[-2:]
    meta = {"dataset": f"imagefolder:{folder.resolve()}", "classes": list(classes),
            "image_shape": [3, int(height), int(width)],
            "preprocess": {"mean": list(card.mean), "std": list(card.std), "input_size": [int(height), int(width)],
                           "resize": "auto"},
            "task": {"name": "classification"},
            "metrics": {"val_acc": result["accuracy"], "val_images": result["held_out_images"]},
            "teach": {key: result[key] for key in ("accuracy", "confusion", "C", "train_images", "held_out_images",
                                                    "images_per_class")}}
    meta["teach"]["backbone"] = f"{card.name} ({card.source})"
    save_model_checkpoint(out, model.eval(), meta)
    return out
