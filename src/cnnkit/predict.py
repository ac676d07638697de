"""Classify image files with a trained checkpoint, converting each image the way the model was trained; and the
one top-k classifier (softmax, k most probable classes) that predict, transfer's photo classifier and the web
page's Photo page share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .card import card_from_meta
from .data.augment import Preprocess
from .data.image_io import read_image
from .data.input_check import distribution_warnings, is_colourful
from .errors import ImageError


def preprocess_from_meta(meta: dict) -> Preprocess:
    """The batch preprocessing a run folder's checkpoint.json records (through its model card)."""
    return card_from_meta(meta).preprocess()


@torch.no_grad()
def top_classes(model: torch.nn.Module, batch: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
    """(class index, probability) of the ``k`` most probable classes of each image in the model-ready batch."""
    probabilities = torch.softmax(model(batch).float(), dim=1)
    top = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    return [list(zip(indices.tolist(), values.tolist())) for values, indices in zip(top.values, top.indices)]


@torch.no_grad()
def predict_files(model: torch.nn.Module, meta: dict, files: list[str | Path], top_k: int = 5,
                  invert: bool = False, warn: Callable[[str], None] | None = None) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) for each image. Images of any size or mode are converted to the
    training data's channels and size; ``invert`` flips dark-on-light drawings to MNIST's light-on-dark.
    ``warn`` (when given) is called with a line for each image unlike the training images."""
    channels, height, width = meta["image_shape"]
    preprocess = preprocess_from_meta(meta)
    batch, colourful = [], []
    for f in files:
        image = read_image(f, channels, (height, width))
        batch.append(255 - image if invert else image)
        # A grey model reads a colour photo as grey: whether the file had colour is only known from the file.
        colourful.append(channels == 1 and warn is not None and is_colourful(read_image(f, 3, (height, width))))
    if not batch:
        raise ImageError("no image files given")
    if warn is not None:
        for line in distribution_warnings(meta, torch.stack(batch), [str(f) for f in files], colourful, invert):
            warn(line)
    model.eval()
    classes = meta["classes"]
    ranked = top_classes(model, preprocess(torch.stack(batch)), min(top_k, len(classes)))
    return [[(classes[i], p) for i, p in row] for row in ranked]
