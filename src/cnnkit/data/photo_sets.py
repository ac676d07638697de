"""Natural-photograph sets read from a data root: the BSDS-derived sets of the denoising literature (DnCNN,
FFDNet, ...) and the Kodak suite of the compression literature; one table, one reader.

    name           folder (under $CNNKIT_DATA)   images  channels  sizes              role
    bsd-train400   bsd/train400                  400     1 (grey)  180x180            training
    bsd-cbsd432    bsd/cbsd432                   432     3 (RGB)   481x321, 321x481   training
    bsd68          bsd/bsd68                     68      1         481x321, 321x481   test
    bsd-cbsd68     bsd/cbsd68                    68      3         481x321, 321x481   test
    bsd-set12      bsd/set12                     12      1         256x256, 512x512   test
    kodak24        kodak24                       24      3         768x512, 512x768   test

The field's protocol (Zhang et al. 2017; Ballé et al. for codecs): train on Train400 (grey) or CBSD432 (colour)
only, test on the others; the training and test sets share no image. Test images keep their own sizes, so
``load_photo_set`` returns a list of uint8 (C, H, W) tensors rather than one stacked tensor.

``load_denoising_data`` packs a training set and a validation set into the :class:`DatasetBundle` the one
training loop reads: the training images stacked whole (the denoising task crops its random patches from them
on each batch), and centre crops of the test images for a quick validation figure after each epoch; the
benchmark figures themselves come from the full test images (``cnnkit.denoise.evaluate_full_images``).
The codec's bundle of whole colour photos is ``cnnkit.compress.load_photos``, read through the same table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..errors import DataError, ImageError, UnknownNameError, did_you_mean
from .catalog import data_roots
from .datasets import DatasetBundle, TensorImageDataset
from .image_io import read_image


@dataclasses.dataclass(frozen=True)
class PhotoSet:
    folder: str
    count: int
    channels: int
    suffixes: tuple[str, ...]
    role: str  # "train" or "test": the protocol's, checked by load_denoising_data


PHOTO_SETS = {
    "bsd-train400": PhotoSet("bsd/train400", 400, 1, (".png",), "train"),
    "bsd-cbsd432": PhotoSet("bsd/cbsd432", 432, 3, (".jpg",), "train"),
    "bsd68": PhotoSet("bsd/bsd68", 68, 1, (".png",), "test"),
    "bsd-cbsd68": PhotoSet("bsd/cbsd68", 68, 3, (".png",), "test"),
    "bsd-set12": PhotoSet("bsd/set12", 12, 1, (".png",), "test"),
    "kodak24": PhotoSet("kodak24", 24, 3, (".png",), "test"),
}


def photo_set(name: str) -> PhotoSet:
    try:
        return PHOTO_SETS[name]
    except KeyError:
        raise UnknownNameError(f"unknown photo set {name!r}.{did_you_mean(name, PHOTO_SETS)}") from None


def photo_files(name: str, root: str | Path | None = None) -> list[Path]:
    """The image files of set ``name`` in sorted order, from ``root`` or the first data root that has the folder.
    A missing folder or a wrong number of files (a partial copy) is a DataError that says where it looked."""
    spec = photo_set(name)
    roots = [Path(root)] if root is not None else data_roots()
    for base in roots:
        folder = base / spec.folder
        if folder.is_dir():
            break
    else:
        looked = ", ".join(str(base / spec.folder) for base in roots)
        raise DataError(f"{name}: no folder {spec.folder} (looked in {looked}). Set CNNKIT_DATA to the folder that "
                        f"holds {spec.folder.split('/')[0]}/ (see the datasets README for where the sets come from).")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in spec.suffixes and p.is_file())
    if len(files) != spec.count:
        raise DataError(f"{name}: {folder} holds {len(files)} {'/'.join(spec.suffixes)} images, expected "
                        f"{spec.count}; the copy is incomplete or mixed with other files. Restore the set "
                        "(the datasets README lists its checksums in SHA256SUMS).")
    return files


def load_photo_set(name: str, root: str | Path | None = None) -> list[torch.Tensor]:
    """Every image of set ``name`` as a uint8 (C, H, W) tensor, in file-name order."""
    spec = photo_set(name)
    images = []
    for path in photo_files(name, root):
        try:
            images.append(read_image(path, spec.channels))
        except ImageError as error:
            raise DataError(f"{name}: {error} Restore the file from the original set.") from None
    return images


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    if min(h, w) < size:
        raise DataError(f"cannot take a {size}x{size} centre crop of a {h}x{w} image; choose a smaller crop")
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top:top + size, left:left + size]


def load_denoising_data(train: str = "bsd-train400", val: str = "bsd68", val_crop: int = 96,
                        root: str | Path | None = None) -> DatasetBundle:
    """The bundle the training loop reads: ``train``'s images whole (all one size), and ``val_crop``-pixel centre
    crops of ``val``'s images as the validation split. Images carry no labels (label 0 each)."""
    for name, role in ((train, "train"), (val, "test")):
        if photo_set(name).role != role:
            raise DataError(f"{name} is a {photo_set(name).role}ing set, not a {role}ing one: train on bsd-train400 "
                            "or bsd-cbsd432 and test on bsd68, bsd-cbsd68 or bsd-set12, never the reverse.")
    if photo_set(train).channels != photo_set(val).channels:
        raise DataError(f"{train} has {photo_set(train).channels}-channel images but {val} has "
                        f"{photo_set(val).channels}; pair grey with grey (bsd-train400, bsd68) or colour with colour.")
    train_images = load_photo_set(train, root)
    sizes = {tuple(image.shape) for image in train_images}
    if len(sizes) != 1:  # CBSD432 mixes portrait and landscape: crop it to its shorter side's square
        side = min(min(size[1:]) for size in sizes)
        train_images = [centre_crop(image, side) for image in train_images]
    train_stack = torch.stack(train_images)
    val_stack = torch.stack([centre_crop(image, val_crop) for image in load_photo_set(val, root)])

    def split(images):
        return TensorImageDataset(images, torch.zeros(len(images), dtype=torch.long), [])

    channels = train_stack.shape[1]
    return DatasetBundle(train, split(train_stack), split(val_stack), [], (0.0,) * channels, (1.0,) * channels,
                         note=f"validation: {val_crop}x{val_crop} centre crops of {val}")


__all__ = ["PHOTO_SETS", "centre_crop", "load_denoising_data", "load_photo_set", "photo_files", "photo_set"]
