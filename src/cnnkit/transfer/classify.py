"""Photos classified with registered pretrained weights, preprocessed as those weights saw their evaluation images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CnnkitError


def load_photo(path, config: dict) -> torch.Tensor:
    """A photo as the pretrained weights saw their evaluation images: shorter side resized to
    ``config["resize"]`` (with the config's interpolation), centre crop of ``config["crop"]``; uint8 (3, H, W)."""
    from ..data.formats import read_image

    from ..data.image_io import shorter_side_size

    image = read_image(path, 3)  # raises ImageError naming the file when it cannot be read, or is too large
    height, width = image.shape[-2:]
    width_out, height_out = shorter_side_size(width, height, config["resize"], config["crop"], str(path))
    size = (height_out, width_out)
    mode = config.get("interpolation", "bilinear")
    top, left = (size[0] - config["crop"]) // 2, (size[1] - config["crop"]) // 2
    # One channel at a time: a float copy of a whole 40-megapixel photo would take 480 MB; channels are
    # resized independently, so the result is the same.
    channels = [F.interpolate(plane[None, None].float(), size=size, mode=mode, align_corners=False, antialias=True)
                [0, 0, top:top + config["crop"], left:left + config["crop"]] for plane in image]
    return torch.stack(channels).clamp_(0, 255).round().to(torch.uint8)


@torch.no_grad()
def classify_images(model: nn.Module, files, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) per photo for a model loaded with registered pretrained weights
    (``create_model("efficientnet_lite0", pretrained="imagenet")``), using the weights' own preprocessing."""
    from ..data.augment import Preprocess

    config = getattr(model, "pretrained_config", None)
    if not config or not config.get("class_names"):
        raise CnnkitError("this model carries no pretrained configuration with class names; build it with "
                          "create_model(NAME, pretrained=TAG) (see cnnkit.weights.list_pretrained()).")
    if not files:
        raise CnnkitError("no image files given.")
    batch = torch.stack([load_photo(f, config) for f in files])
    model.eval()
    probabilities = torch.softmax(model(Preprocess(config["mean"], config["std"])(batch)).float(), dim=1)
    top = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
    names = config["class_names"]
    return [[(names[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]
            for values, indices in zip(top.values, top.indices)]
