"""Real segmentation data: folders of images and their pixel masks.

    PATH/images/<name>.jpg|png|...     PATH/masks/<name>.png      (optional PATH/classes.txt, one name a line)
    or PATH/train/{images,masks}/ and PATH/val/{images,masks}/   (else 10% is held out with a fixed seed)

A mask is a single-channel PNG (mode L, P or I) whose pixel values are class indices (0 = background). It must
have exactly its image's size: a mask of another size would be silently misaligned after resizing, so it is
refused with both sizes named. Images (and masks, nearest-neighbour) are resized to ``image_size`` when given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .datasets import DatasetBundle, TensorImageDataset, channel_stats
from .formats import IMAGE_SUFFIXES, read_image
from .image_io import IMAGE_FORMATS, check_image_size

SEGFOLDER_PREFIX = "segfolder:"


def read_mask(path: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A (H, W) int64 tensor of class indices from a single-channel mask image."""
    from PIL import Image

    try:
        with Image.open(path, formats=IMAGE_FORMATS) as im:
            check_image_size(*im.size, source=str(path))  # before decoding: the header's size may be a bomb
            im.load()
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise DataError(f"{path}: a mask must be a single-channel image whose pixel values are class indices "
                                f"(mode L, P or I), got mode {im.mode}; save it as a grey-level or palette PNG.")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.NEAREST)  # never blend class indices
            return torch.from_numpy(np.asarray(im).astype(np.int64))
    except FileNotFoundError:
        raise DataError(f"{path}: no such mask file.") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path} is not a readable mask image ({exc}); use a single-channel PNG.") from None


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size  # (width, height)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path} is not a readable image ({exc}).") from None


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise DataError(f"{folder}: expected the sub-folders images/ and masks/ (a mask masks/NAME.png for every "
                        "images/NAME.jpg), or train/ and val/ folders that each hold them.")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    pairs, missing = [], []
    for image in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if image.stem in masks:
            pairs.append((image, masks[image.stem]))
        else:
            missing.append(image.name)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{masks_dir} has no mask for {shown}; every image needs a mask of the same name (.png).")
    if not pairs:
        raise DataError(f"{images_dir}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return pairs


def read_pairs(pairs: list[tuple[Path, Path]], image_size: int | None, channels: int = 3):
    images, masks = [], []
    first_size = None
    for image_path, mask_path in pairs:
        width, height = _image_size(image_path)
        mask_width, mask_height = _image_size(mask_path)
        if (mask_width, mask_height) != (width, height):
            raise DataError(f"mask {mask_path} is {mask_width}x{mask_height} but its image {image_path} is "
                            f"{width}x{height} (width x height); a mask must have its image's exact size. "
                            "Re-export the mask at the image's size.")
        if image_size is None:
            first_size = first_size or (width, height)
            if (width, height) != first_size:
                raise DataError(f"{image_path} is {width}x{height} but the first image is {first_size[0]}x"
                                f"{first_size[1]}; images of different sizes need image_size=N (--image-size N) "
                                "so all are resized to N x N.")
        size = (image_size, image_size) if image_size else None
        images.append(read_image(image_path, channels, size))
        masks.append(read_mask(mask_path, size))
    return torch.stack(images), torch.stack(masks)


def load_segmentation_folder(path: str | Path, image_size: int | None = None, channels: int = 3) -> DatasetBundle:
    """Image/mask folder pairs as a bundle the Trainer reads with a SegmentationTask."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"{SEGFOLDER_PREFIX}{path}: no such folder. Expected PATH/images/ and PATH/masks/.")
    if (path / "train").is_dir():
        val_dir = path / "val" if (path / "val").is_dir() else path / "test"
        train_pairs, test_pairs = _pairs(path / "train"), _pairs(val_dir)
    else:
        pairs = _pairs(path)
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0)).tolist()
        n_test = max(1, len(pairs) // 10)
        test_pairs = [pairs[i] for i in order[:n_test]]
        train_pairs = [pairs[i] for i in order[n_test:]] or test_pairs
    train_images, train_masks = read_pairs(train_pairs, image_size, channels)
    test_images, test_masks = read_pairs(test_pairs, image_size, channels)
    if tuple(train_images.shape[-2:]) != tuple(test_images.shape[-2:]):
        raise DataError(f"{path}: training images are {tuple(train_images.shape[-2:])} but validation images "
                        f"{tuple(test_images.shape[-2:])}; pass image_size=N to resize both.")
    num_classes = int(max(train_masks.max(), test_masks.max())) + 1
    names_file = path / "classes.txt"
    if names_file.is_file():
        classes = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        if len(classes) < num_classes:
            raise DataError(f"{names_file} names {len(classes)} classes but the masks use index {num_classes - 1}; "
                            "add the missing names (line k is class k, starting with background).")
    else:
        classes = ["background"] + [f"class{k}" for k in range(1, num_classes)]
    train = TensorImageDataset(train_images, train_masks, classes)
    test = TensorImageDataset(test_images, test_masks, classes)
    mean, std = channel_stats(train_images)
    return DatasetBundle(f"{SEGFOLDER_PREFIX}{path}", train, test, classes, mean, std)


__all__ = ["SEGFOLDER_PREFIX", "load_segmentation_folder", "read_mask"]
