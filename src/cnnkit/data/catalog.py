"""One entry per dataset: its files, where to download them, their checksums, image shape and class names.

Where files are looked for, in order (each dataset in a sub-folder named after it):
  1. ``$CNNKIT_DATA/<name>/``      (a shared, read-only folder: ``CNNKIT_DATA=../shared/datasets``)
  2. ``$CNNKIT_CACHE/<name>/``     (default ``~/.cache/cnnkit``; downloads land here)
  3. download from the entry's mirrors into the cache, MD5-verified, moved into place atomically.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    filename: str
    md5: str


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    image_shape: tuple[int, int, int]  # channels, height, width
    classes: tuple[str, ...]  # empty when read from the files (CIFAR-100) or folders
    mirrors: tuple[str, ...] = ()
    files: dict[str, RemoteFile] = dataclasses.field(default_factory=dict)  # role -> file
    license: str = ""


MNIST = DatasetSpec(
    name="mnist",
    description="MNIST handwritten digits: 60,000 train / 10,000 test, 28x28 grey",
    image_shape=(1, 28, 28),
    classes=tuple(str(d) for d in range(10)),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    files={
        "train_images": RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train_labels": RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        "test_images": RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        "test_labels": RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    },
    license="CC BY-SA 3.0, Yann LeCun and Corinna Cortes",
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    description="Fashion-MNIST (Zalando): 60,000 train / 10,000 test, 28x28 grey",
    image_shape=(1, 28, 28),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    files={
        "train_images": RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_labels": RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        "test_images": RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        "test_labels": RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    },
    license="MIT, Zalando SE",
)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CIFAR10 = DatasetSpec(
    name="cifar10",
    description="CIFAR-10: 50,000 train / 10,000 test, 32x32 RGB, 10 classes",
    image_shape=(3, 32, 32),
    classes=CIFAR10_CLASSES,
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    files={
        "binary": RemoteFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),
        "python": RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
        # Not the official data: a quality-75 JPEG re-encoding (see the shared datasets README). Read only when
        # the official files are absent, with a warning that figures on it are not comparable.
        "lossy_jpeg": RemoteFile("lossy-jpeg/cifar10-jpeg-q75-YoongiKim.tar.gz", "e18cc7348ab31daba0c535830cc6917b"),
    },
    license="no explicit license; cite Krizhevsky 2009",
)

CIFAR100 = DatasetSpec(
    name="cifar100",
    description="CIFAR-100: 50,000 train / 10,000 test, 32x32 RGB, 100 fine classes",
    image_shape=(3, 32, 32),
    classes=(),
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    files={
        "binary": RemoteFile("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8"),
        "python": RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
    },
    license="no explicit license; cite Krizhevsky 2009",
)

CATALOG: dict[str, DatasetSpec] = {s.name: s for s in (MNIST, FASHION_MNIST, CIFAR10, CIFAR100)}


@dataclasses.dataclass(frozen=True)
class GeneratedSpec:
    """A data set drawn from a catalogued one's official files, reproducibly from a seed (nothing to download)."""

    name: str
    description: str
    source: str  # the CATALOG entry it is drawn from
    task: str  # what its labels are for


# Detection and segmentation canvases (cnnkit.data.canvas.load_canvas): objects with exact boxes and masks.
GENERATED: dict[str, GeneratedSpec] = {g.name: g for g in (
    GeneratedSpec("canvas-mnist", "MNIST digits at random scales on canvases cluttered with digit fragments; "
                  "boxes, instance and semantic masks", "mnist", "detection"),
    GeneratedSpec("canvas-fashion-mnist", "Fashion-MNIST items at random scales on canvases cluttered with "
                  "fragments; boxes, instance and semantic masks", "fashion-mnist", "detection"),
)}
IMAGEFOLDER_PREFIX = "imagefolder:"


def data_roots() -> list[Path]:
    """The folders searched for dataset files, in order: $CNNKIT_DATA, then the cache."""
    roots = []
    if os.environ.get("CNNKIT_DATA"):
        roots.append(Path(os.environ["CNNKIT_DATA"]).expanduser())
    roots.append(cache_dir())
    return roots


def cache_dir() -> Path:
    return Path(os.environ.get("CNNKIT_CACHE", Path.home() / ".cache" / "cnnkit")).expanduser()


def list_datasets() -> list[str]:
    return sorted(CATALOG) + [IMAGEFOLDER_PREFIX + "PATH"]
