"""Natural photographs for training and measuring a codec: the BSDS-derived colour sets and Kodak24.

    bundle = load_photos("cbsd432")          # train: CBSD432 (432 photos), test: CBSD68; uint8 in memory
    Trainer(model, bundle, config, task=CompressionTask(lmbda, crop=256))    # random crops, batched on tensors
    kodak = load_photo_folder("kodak24")     # list of (3, H, W) uint8 images, for the benchmark only

The BSDS photographs are all 481x321, landscape or portrait; portrait ones are turned a quarter turn so the
whole set is one (N, 3, 321, 481) uint8 tensor (200 MB for 432 photos) from which the task cuts its random
crops. Kodak24 is a test set: it is never trained on.
"""

from __future__ import annotations

import torch

from ..data.datasets import DatasetBundle, TensorImageDataset, channel_stats
from ..data.photo_sets import load_photo_set
from ..errors import DataError

# the codec's names for its sets -> the names of the one table in cnnkit.data.photo_sets
PHOTO_SETS = {"cbsd432": "bsd-cbsd432", "cbsd68": "bsd-cbsd68", "kodak24": "kodak24"}
# "train" sets pair with the test set the Trainer validates on.
TEST_SET = {"cbsd432": "cbsd68"}


def load_photo_folder(name: str) -> list[torch.Tensor]:
    """Every image of a photo set, sorted by file name, as (3, H, W) uint8 tensors at their own size."""
    if name not in PHOTO_SETS:
        raise DataError(f"unknown photo set {name!r}; known: {', '.join(PHOTO_SETS)}")
    return load_photo_set(PHOTO_SETS[name])


def stack_landscape(images: list[torch.Tensor], name: str) -> torch.Tensor:
    """Images of one size, landscape or portrait, as one (N, C, H, W) tensor with portrait ones turned."""
    turned = [image.transpose(1, 2) if image.shape[1] > image.shape[2] else image for image in images]
    sizes = {tuple(image.shape) for image in turned}
    if len(sizes) != 1:
        raise DataError(f"photo set {name!r} mixes image sizes {sorted(sizes)}; crop them to one size first")
    return torch.stack(turned).contiguous()


def load_photos(name: str = "cbsd432") -> DatasetBundle:
    """A training set of photographs and its test set, as uint8 tensors (see the module docstring)."""
    if name not in TEST_SET:
        raise DataError(f"{name!r} is not a training set of photographs; use one of {', '.join(TEST_SET)}")
    splits = {}
    for role, set_name in (("train", name), ("test", TEST_SET[name])):
        images = stack_landscape(load_photo_folder(set_name), set_name)
        splits[role] = TensorImageDataset(images, torch.zeros(len(images), dtype=torch.long), ["photo"])
    mean, std = channel_stats(splits["train"].images)
    return DatasetBundle(f"{name}+{TEST_SET[name]}", splits["train"], splits["test"], ["photo"], mean, std,
                         note="random crops in training; whole photos in evaluation")
