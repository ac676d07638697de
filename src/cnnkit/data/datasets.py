"""``load_dataset(name)``: the train and test splits of a catalogued dataset or an image folder.

Small and medium datasets are returned as in-memory uint8 tensors (N, C, H, W): MNIST is 47 MB, CIFAR 150 MB,
so holding them beats any per-sample loader. Image folders stream from disk through a DataLoader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, UnknownNameError, did_you_mean
from .catalog import CATALOG, GENERATED, IMAGEFOLDER_PREFIX, DatasetSpec, cache_dir, data_roots
from .download import locate, md5sum, missing_error
from .formats import IMAGE_SUFFIXES, read_cifar, read_idx, read_image, read_jpeg_tarball


class LossyDataWarning(UserWarning):
    """Figures measured on a lossy copy of a dataset are not comparable to published ones."""


def describe_classes(classes, shown: int = 5) -> str:
    """'10 classes [0, 1, 2, 3, 4, ...]': enough to recognise a dataset, short enough for one line."""
    names = [str(c) for c in classes]
    listed = ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
    return f"{len(names)} classes [{listed}]" if names else "no class names"


def _split_repr(dataset, where: str = "") -> str:
    c, h, w = dataset.image_shape
    images = getattr(dataset, "images", None)
    dtype = str(images.dtype).removeprefix("torch.") if images is not None else "uint8"
    return (f"{type(dataset).__name__}({len(dataset):,} images{where}, {c}x{h}x{w} {dtype}, "
            f"{describe_classes(dataset.classes)})")


@dataclasses.dataclass(repr=False)
class TensorImageDataset(torch.utils.data.Dataset):
    """Images as a uint8 tensor (N, C, H, W) and labels as int64 (N,), all in memory. A map-style torch
    ``Dataset`` too: ``dataset[i]`` is ``(image, label)``, the image a uint8 (C, H, W) tensor and the label an
    int, so a ``torch.utils.data.DataLoader`` batches it as it would torchvision's (cnnkit's own loop reads
    the whole tensors instead, see ``cnnkit.data.loader``)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):  # IndexError also ends `for image, label in dataset`
            raise IndexError(f"index {index} is out of range for a split of {len(self):,} images")
        return self.images[index], int(self.labels[index])

    def __repr__(self) -> str:
        return _split_repr(self)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"images must be a uint8 (N,C,H,W) tensor, got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, indices) -> TensorImageDataset:
        indices = torch.as_tensor(indices, dtype=torch.long)
        return TensorImageDataset(self.images[indices], self.labels[indices], self.classes)


class FolderImageDataset(torch.utils.data.Dataset):
    """An ImageNet-style folder: one sub-folder per class. Images are decoded on demand (in DataLoader
    workers) and resized to ``image_size`` so batches stack; augmentation happens later, batched."""

    def __init__(self, files: list[Path], labels: list[int], classes: list[str], channels: int, image_size: int):
        self.files, self.labels_list, self.classes = files, labels, classes
        self.channels, self.image_size = channels, image_size
        self.labels = torch.tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def __getitem__(self, index: int):
        image = read_image(self.files[index], self.channels, (self.image_size, self.image_size))
        return image, self.labels_list[index]

    def __repr__(self) -> str:
        folder = os.path.commonpath([str(f.parent.parent) for f in self.files]) if self.files else ""
        return _split_repr(self, f" in {folder}" if folder else "")

    def subset(self, indices) -> FolderImageDataset:
        indices = [int(i) for i in indices]
        return FolderImageDataset([self.files[i] for i in indices], [self.labels_list[i] for i in indices],
                                  self.classes, self.channels, self.image_size)


@dataclasses.dataclass(repr=False)
class DatasetBundle:
    name: str
    train: TensorImageDataset | FolderImageDataset
    test: TensorImageDataset | FolderImageDataset
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    note: str = ""  # e.g. that this is a lossy copy

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape

    def describe(self) -> str:
        c, h, w = self.image_shape
        text = (f"{self.name}: {len(self.train):,} train / {len(self.test):,} test, {c}x{h}x{w}, "
                f"{len(self.classes)} classes")
        return text + (f" ({self.note})" if self.note else "")

    def __repr__(self) -> str:
        def numbers(values):
            return "(" + ", ".join(f"{v:.4g}" for v in values) + ("," if len(values) == 1 else "") + ")"

        splits = "".join(f"\n  {role}: {split!r}" for role, split in (("train", self.train), ("test", self.test)))
        note = f", note={self.note!r}" if self.note else ""
        return (f"DatasetBundle({self.name!r}, {describe_classes(self.classes)}, mean={numbers(self.mean)}, "
                f"std={numbers(self.std)}{note}){splits}")


def random_subset(dataset, count: int, seed: int = 0):
    """``count`` items of ``dataset`` drawn once at random (the same for a given seed), keeping the dataset type.
    Never take "the first N" of a split: some copies are sorted by class (the CIFAR-10 JPEG copy's first 1,000
    test images are all aeroplanes)."""
    if count >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    return dataset.subset(order.sort().values)


def balanced_subset(dataset, count: int, seed: int = 0):
    """``count`` items of a labelled ``dataset``, the same number per class (the first ``count % classes`` classes
    one more), each class's drawn at random for ``seed``: a quick run sees every class, however the copy is sorted."""
    labels = dataset.labels
    classes = int(labels.max()) + 1
    if count < classes:
        raise DataError(f"A balanced subset of {count} images has fewer than one image per class ({classes} "
                        f"classes); ask for at least {classes}.")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    per_class = [order[labels[order] == c] for c in range(classes)]
    quota = [count // classes + (1 if c < count % classes else 0) for c in range(classes)]
    return dataset.subset(torch.cat([idx[:q] for idx, q in zip(per_class, quota)]).sort().values)


def subset_bundle(bundle, train_count: int | None = None, test_count: int | None = None, seed: int = 0):
    """``bundle`` with its training split cut to ``train_count`` images balanced over the classes and its test
    split to ``test_count`` drawn at random (never "the first N": some copies are sorted by class); None keeps
    a split whole."""
    if train_count:
        bundle = dataclasses.replace(bundle, train=balanced_subset(bundle.train, train_count, seed))
    if test_count:
        bundle = dataclasses.replace(bundle, test=random_subset(bundle.test, test_count, seed))
    return bundle


def channel_stats(images: torch.Tensor, max_images: int = 20000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, from (a deterministic slice of) the training images."""
    sample = images[:: max(1, len(images) // max_images)].float().div_(255)
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3))
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def load_dataset(name: str, download: bool = True, image_size: int = 224, channels: int = 3) -> DatasetBundle:
    """Load a dataset by catalog name (``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``) or
    ``imagefolder:PATH``. ``image_size`` and ``channels`` apply to image folders only."""
    if name.startswith(IMAGEFOLDER_PREFIX):
        return load_image_folder(Path(name[len(IMAGEFOLDER_PREFIX):]), image_size, channels)
    if name not in CATALOG:
        raise UnknownNameError(f"Unknown dataset {name!r}.{did_you_mean(name, list(CATALOG) + ['imagefolder:PATH'])}")
    spec = CATALOG[name]
    if name in ("mnist", "fashion-mnist"):
        return _load_idx_dataset(spec, download)
    return _load_cifar(spec, download)


def _load_idx_dataset(spec: DatasetSpec, download: bool) -> DatasetBundle:
    arrays = {role: read_idx(locate(spec, f, download)) for role, f in spec.files.items()}
    splits = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != spec.image_shape[1:] or len(images) != len(labels):
            raise DataError(f"{spec.name} {split}: images {images.shape} and {len(labels)} labels do not match "
                            f"the expected N x {spec.image_shape[1]} x {spec.image_shape[2]}.")
        if labels.max() >= len(spec.classes):
            raise DataError(f"{spec.name} {split}: label {labels.max()} out of range for {len(spec.classes)} classes.")
        splits[split] = TensorImageDataset(torch.from_numpy(images.copy()).unsqueeze(1),
                                           torch.from_numpy(labels.astype(np.int64)), list(spec.classes))
    mean, std = channel_stats(splits["train"].images)
    return DatasetBundle(spec.name, splits["train"], splits["test"], list(spec.classes), mean, std)


def _find_local(spec: DatasetSpec, role: str) -> Path | None:
    """An official CIFAR release present locally, as the tar.gz or its extracted folder."""
    file = spec.files[role]
    folder = file.filename.replace(".tar.gz", "").replace("-binary", "-batches-bin").replace("-python", "-batches-py")
    if spec.name == "cifar100":
        folder = "cifar-100-binary" if role == "binary" else "cifar-100-python"
    for root in data_roots():
        if (root / spec.name / file.filename).is_file():
            return locate(spec, file, download=False)
        if (root / spec.name / folder).is_dir():
            return root / spec.name / folder
    return None


def _load_cifar(spec: DatasetSpec, download: bool) -> DatasetBundle:
    num_classes = 10 if spec.name == "cifar10" else 100
    note = ""
    for role in ("binary", "python"):
        path = _find_local(spec, role)
        if path is not None:
            data = read_cifar(path, role, num_classes)
            break
    else:
        data = None
        lossy = spec.files.get("lossy_jpeg")
        if lossy is not None and any((r / spec.name / lossy.filename).is_file() for r in data_roots()):
            data = _cached_jpeg_cifar(spec, locate(spec, lossy, download=False))
            note = "lossy JPEG copy: figures are not comparable to published CIFAR-10 results"
            warnings.warn(f"{spec.name}: reading the lossy JPEG copy (quality 75), not the official files; "
                          "accuracies on it are about 3 points lower than on the official data.", LossyDataWarning,
                          stacklevel=3)
        elif download:
            data = read_cifar(locate(spec, spec.files["binary"], download=True), "binary", num_classes)
        else:
            raise missing_error(spec, [spec.files["binary"], spec.files["python"]], [])
    classes = list(data.get("classes") or spec.classes)
    if len(classes) != num_classes:
        raise DataError(f"{spec.name}: found {len(classes)} class names, expected {num_classes}.")
    splits = {s: TensorImageDataset(torch.from_numpy(np.ascontiguousarray(data[s][0])),
                                    torch.from_numpy(data[s][1]), classes) for s in ("train", "test")}
    mean, std = channel_stats(splits["train"].images)
    return DatasetBundle(spec.name, splits["train"], splits["test"], classes, mean, std, note)


def _cached_jpeg_cifar(spec: DatasetSpec, tarball: Path) -> dict:
    """Decode the JPEG tarball once (about 20 s) into a safetensors file in the cache, keyed by the tarball's
    MD5 and verified by a SHA-256 of the decoded tensors on every load."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    source_md5 = md5sum(tarball)
    cached = cache_dir() / spec.name / f"decoded-{source_md5[:12]}.safetensors"
    keys = ("train_images", "train_labels", "test_images", "test_labels")
    if cached.is_file():
        try:
            with safe_open(str(cached), "pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in keys}
            if meta.get("source_md5") == source_md5 and meta.get("sha256") == _tensor_digest(tensors):
                return {s: (tensors[f"{s}_images"].numpy(), tensors[f"{s}_labels"].numpy()) for s in ("train", "test")}
        except Exception:  # a corrupt cache file is rebuilt below, never trusted
            pass
        cached.unlink(missing_ok=True)
    decoded = read_jpeg_tarball(tarball, spec.classes)
    tensors = {}
    for s in ("train", "test"):
        tensors[f"{s}_images"] = torch.from_numpy(decoded[s][0])
        tensors[f"{s}_labels"] = torch.from_numpy(decoded[s][1])
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"source_md5": source_md5, "sha256": _tensor_digest(tensors),
                                           "source": str(tarball)})
    os.replace(tmp, cached)
    return decoded


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_image_folder(path: Path, image_size: int, channels: int) -> DatasetBundle:
    """``PATH/<class>/*.jpg`` (split 90/10 by a fixed seed) or ``PATH/train/<class>`` + ``PATH/val/<class>``."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"imagefolder:{path}: no such folder. Expected PATH/<class>/*.jpg or PATH/train/<class>/ "
                        "and PATH/val/<class>/.")
    split_dirs = {s: path / s for s in ("train", "val", "test") if (path / s).is_dir()}
    if "train" in split_dirs:
        train_dir = split_dirs["train"]
        test_dir = split_dirs.get("val") or split_dirs.get("test")
        if test_dir is None:
            raise DataError(f"{path} has train/ but neither val/ nor test/.")
        classes = _class_folders(train_dir)
        train_files, train_labels = _scan(train_dir, classes)
        test_files, test_labels = _scan(test_dir, classes)
    else:
        classes = _class_folders(path)
        files, labels = _scan(path, classes)
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
        n_test = max(1, len(files) // 10)
        test_idx, train_idx = order[:n_test], order[n_test:]
        train_files, train_labels = [files[i] for i in train_idx], [labels[i] for i in train_idx]
        test_files, test_labels = [files[i] for i in test_idx], [labels[i] for i in test_idx]
    train = FolderImageDataset(train_files, train_labels, classes, channels, image_size)
    test = FolderImageDataset(test_files, test_labels, classes, channels, image_size)
    sample = torch.stack([train[i][0] for i in range(0, len(train), max(1, len(train) // 200))])
    mean, std = channel_stats(sample)
    return DatasetBundle(f"imagefolder:{path}", train, test, classes, mean, std)


def _class_folders(path: Path) -> list[str]:
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{path} has no class sub-folders; expected {path}/<class name>/<image files>.")
    return classes


def _scan(path: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for i, c in enumerate(classes):
        folder = path / c
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        files += found
        labels += [i] * len(found)
    if not files:
        raise DataError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class folders.")
    return files, labels


def describe_catalog() -> list[dict]:
    """One row per catalog entry and whether its files are present locally (for ``cnnkit datasets``)."""
    rows = []
    for spec in CATALOG.values():
        copy = local_copy(spec)
        rows.append({"name": spec.name, "description": spec.description, "local": copy is not None, "copy": copy,
                     "classes": len(spec.classes) or 100})
    for generated in GENERATED.values():  # drawn from a catalogued data set: present when its source is
        source = CATALOG[generated.source]
        copy = local_copy(source)
        rows.append({"name": generated.name, "description": generated.description, "local": copy is not None,
                     "copy": f"drawn from {source.name}'s {copy}" if copy else None, "classes": len(source.classes)})
    return rows


def local_copy(spec: DatasetSpec) -> str | None:
    """Which copy of a catalog dataset ``load_dataset`` would read, with its folder; None when none is local.
    The order is load_dataset's: the official files first, the lossy JPEG copy only without them."""
    if "binary" in spec.files:  # CIFAR: tar.gz or extracted folder, binary or python release
        for role in ("binary", "python"):
            tarball = spec.files[role].filename
            folders = ("cifar-10-batches-bin", "cifar-100-binary") if role == "binary" else (
                "cifar-10-batches-py", "cifar-100-python")
            for root in data_roots():  # presence only: the checksum is verified when the data is read
                found = [root / spec.name / name for name in (tarball, *folders) if (root / spec.name / name).exists()]
                if found:
                    return f"official {role} release, {found[0]}"
        lossy = spec.files.get("lossy_jpeg")
        for root in data_roots() if lossy is not None else ():
            if (root / spec.name / lossy.filename).is_file():
                return f"lossy JPEG copy (quality 75; ~3 points below published accuracies), {root / spec.name}"
        return None
    for root in data_roots():
        names = [f.filename for f in spec.files.values()]
        if all((root / spec.name / n).exists() or (root / spec.name / n.removesuffix(".gz")).exists() for n in names):
            return f"official files, {root / spec.name}"
    return None


__all__ = [
    "DatasetBundle",
    "FolderImageDataset",
    "LossyDataWarning",
    "TensorImageDataset",
    "describe_catalog",
    "describe_classes",
    "load_dataset",
    "random_subset",
]
