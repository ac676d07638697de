"""Photos classified with registered pretrained weights, preprocessed as those weights saw their evaluation images."""

from __future__ import annotations

import torch
from torch import nn

from ..card import ModelCard, card_of
from ..data.transforms import EvalTransform
from ..errors import CnnkitError
from ..predict import top_classes


def load_photo(path, card: ModelCard | dict) -> torch.Tensor:
    """A photo as the pretrained weights saw their evaluation images (the eval transform: shorter side
    resized, centre crop), uint8 (3, H, W). ``card`` is the model's card (or an old-style dict with
    ``resize``, ``crop`` and ``interpolation``)."""
    if isinstance(card, dict):
        transform = EvalTransform((card["crop"], card["crop"]), card["resize"], card.get("interpolation", "bilinear"))
    else:
        transform = card.eval_transform()
    return transform.read(path, 3)  # raises ImageError naming the file when it cannot be read, or is too large


@torch.no_grad()
def classify_images(model: nn.Module, files, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) per photo for a model loaded with registered pretrained weights
    (``create_model("efficientnet_lite0", pretrained="imagenet")``), using the weights' own preprocessing."""
    card = card_of(model)
    if not card.classes or card.resize is None:
        raise CnnkitError("this model carries no pretrained configuration with class names; build it with "
                          "create_model(NAME, pretrained=TAG) (see cnnkit.weights.list_pretrained()).")
    if not files:
        raise CnnkitError("no image files given.")
    transform = card.eval_transform()
    batch = transform.normalise(torch.stack([transform.read(f, 3) for f in files]))
    model.eval()
    return [[(card.classes[i], p) for i, p in row] for row in top_classes(model, batch, top_k)]
