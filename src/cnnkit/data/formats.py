"""Readers for the original file formats. Each verifies what it reads (magic numbers, sizes, shapes) and
raises :class:`DataError` naming the file and the fix; nothing untrusted is ever unpickled.

- IDX (MNIST, Fashion-MNIST), gzipped or raw
- CIFAR-10/100 binary batches (``*.bin``) and python batches (pickles, through a restricted unpickler)
- the lossy CIFAR-10 JPEG tarball (``train/<class>/NNNN.jpg``)
- single image files (Pillow; any mode converted to the channels a model wants)
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..errors import DataError, ImageError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzip; a truncated or corrupt archive is a DataError."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{path} is a corrupt or truncated gzip file ({exc}). "
                            "Delete it and download it again.") from None
    return raw


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse an IDX array: magic 0x0000 TT DD (type, number of dims), DD big-endian int32 sizes, then data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{source} is not an IDX file (bad magic number {data[:4].hex()}).")
    dtype_code, ndim = data[2], data[3]
    if dtype_code not in IDX_DTYPES or ndim == 0:
        raise DataError(f"{source}: unknown IDX element type 0x{dtype_code:02x} or rank {ndim}.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source} is truncated: its IDX header is incomplete.")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[dtype_code])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{source}: the header promises shape {shape} ({expected} bytes) but the file has {len(data)} bytes; "
            "it is truncated or corrupt. Delete it and download it again."
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    return parse_idx(read_maybe_gzip(path), str(path))


# ----------------------------------------------------------------------------------------------------- CIFAR
CIFAR_IMAGE_BYTES = 3 * 32 * 32


def parse_cifar_binary(data: bytes, label_bytes: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary records: ``label_bytes`` label bytes (CIFAR-100: coarse then fine) then 3072 pixel bytes
    (R plane, G plane, B plane, row-major). Returns (N,3,32,32) uint8 images and the last label byte."""
    record = label_bytes + CIFAR_IMAGE_BYTES
    if len(data) == 0 or len(data) % record:
        raise DataError(
            f"{source}: {len(data)} bytes is not a whole number of {record}-byte CIFAR records; "
            "the file is truncated or is not a CIFAR binary batch."
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    labels = rows[:, label_bytes - 1].astype(np.int64)
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32)
    return images, labels


class RestrictedUnpickler(pickle.Unpickler):
    """Admits only plain containers, bytes/str/numbers and numpy arrays: what CIFAR's python batches hold.

    ``pickle.load`` on a downloaded file can run arbitrary code; this unpickler refuses every global except
    the few numpy reconstructors, so a hostile file fails with a DataError instead.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # python-2 pickles store some byte strings this way
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def restricted_loads(data: bytes, source: str = "<bytes>"):
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"{source} is not a plain CIFAR python batch ({exc}); refusing to read it.") from None


def parse_cifar_python(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    batch = restricted_loads(data, source)
    if not isinstance(batch, dict):
        raise DataError(f"{source}: expected a dict of arrays, found {type(batch).__name__}.")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    label_key = "labels" if "labels" in batch else "fine_labels"
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{source}: a CIFAR python batch needs 'data' and 'labels' (or 'fine_labels'); "
                        f"has {sorted(batch)}.")
    images = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if images.ndim != 2 or images.shape[1] != CIFAR_IMAGE_BYTES or len(images) != len(labels):
        raise DataError(f"{source}: data of shape {images.shape} and {len(labels)} labels are not CIFAR batches.")
    return images.reshape(-1, 3, 32, 32), labels


def parse_cifar_meta(data: bytes, source: str) -> list[str]:
    """Class names from a python ``batches.meta``/``meta`` pickle."""
    meta = restricted_loads(data, source)
    meta = {k.decode() if isinstance(k, bytes) else k: v for k, v in meta.items()}
    names = meta.get("label_names") or meta.get("fine_label_names") or []
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


class ArchiveOrFolder:
    """Uniform read access to members of a ``.tar.gz`` or a plain folder, by relative name suffix."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._tar = None
        if self.path.is_file():
            try:
                self._tar = tarfile.open(self.path, "r:*")
                self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                raise DataError(f"{self.path} is a corrupt or truncated archive ({exc}). "
                                "Delete it and download it again.") from None
        else:
            self._members = {str(p.relative_to(self.path)): p for p in self.path.rglob("*") if p.is_file()}

    def names(self) -> list[str]:
        return sorted(self._members)

    def find(self, suffix: str) -> str | None:
        for name in self.names():
            if name == suffix or name.endswith("/" + suffix):
                return name
        return None

    def read(self, name: str) -> bytes:
        member = self._members[name]
        try:
            return self._tar.extractfile(member).read() if self._tar else Path(member).read_bytes()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{self.path}: member {name} cannot be read ({exc}); "
                            "the archive is corrupt or truncated.") from None

    def close(self):
        if self._tar:
            self._tar.close()


def read_cifar(path: Path, kind: str, num_classes: int) -> dict:
    """Read an official CIFAR-10/100 release (``kind`` 'binary' or 'python'; a tar.gz or its extracted folder).

    Returns {"train": (images, labels), "test": (images, labels), "classes": [...]}.
    """
    src = ArchiveOrFolder(path)
    try:
        if kind == "binary":
            label_bytes = 1 if num_classes == 10 else 2
            train_names = [f"data_batch_{i}.bin" for i in range(1, 6)] if num_classes == 10 else ["train.bin"]
            test_names = ["test_batch.bin"] if num_classes == 10 else ["test.bin"]
            meta_name = "batches.meta.txt" if num_classes == 10 else "fine_label_names.txt"

            def load(name):
                member = src.find(name)
                if member is None:
                    raise DataError(f"{path} has no {name}; expected the official CIFAR binary release.")
                return parse_cifar_binary(src.read(member), label_bytes, f"{path}:{member}")

            meta = src.find(meta_name)
            classes = [c for c in src.read(meta).decode().split() if c] if meta else []
        else:
            train_names = [f"data_batch_{i}" for i in range(1, 6)] if num_classes == 10 else ["train"]
            test_names = ["test_batch"] if num_classes == 10 else ["test"]

            def load(name):
                member = src.find(name)
                if member is None:
                    raise DataError(f"{path} has no {name}; expected the official CIFAR python release.")
                return parse_cifar_python(src.read(member), f"{path}:{member}")

            meta = src.find("batches.meta" if num_classes == 10 else "meta")
            classes = parse_cifar_meta(src.read(meta), f"{path}:{meta}") if meta else []
        train = [load(n) for n in train_names]
        test = [load(n) for n in test_names]
    finally:
        src.close()
    cat = lambda parts: (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return {"train": cat(train), "test": cat(test), "classes": classes}


def read_jpeg_tarball(path: Path, classes: tuple[str, ...]) -> dict:
    """Decode the lossy CIFAR-10 copy: ``train/<class>/NNNN.jpg`` and ``test/<class>/NNNN.jpg`` members."""
    from PIL import Image

    src = ArchiveOrFolder(path)
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    try:
        for split in ("train", "test"):
            names = [n for n in src.names() if n.split("/")[-3:-2] == [split] and n.endswith(".jpg")]
            if not names:
                raise DataError(f"{path} holds no {split}/<class>/*.jpg images.")
            images = np.empty((len(names), 32, 32, 3), dtype=np.uint8)
            labels = np.empty(len(names), dtype=np.int64)
            for k, name in enumerate(names):
                cls = name.split("/")[-2]
                if cls not in index:
                    raise DataError(f"{path}: {name} is in an unknown class folder {cls!r}; expected one of {classes}.")
                try:
                    with Image.open(io.BytesIO(src.read(name))) as im:
                        arr = np.asarray(im.convert("RGB"))
                except OSError as exc:
                    raise DataError(f"{path}: {name} is not a readable image ({exc}).") from None
                if arr.shape != (32, 32, 3):
                    raise DataError(f"{path}: {name} is {arr.shape[1]}x{arr.shape[0]}, expected 32x32.")
                images[k], labels[k] = arr, index[cls]
            out[split] = (images.transpose(0, 3, 1, 2).copy(), labels)
    finally:
        src.close()
    return out


# ----------------------------------------------------------------------------------------------- image files
def read_image(source: str | Path | BinaryIO, channels: int, size: tuple[int, int] | None = None,
               max_pixels: int = 64_000_000) -> torch.Tensor:
    """Read one image file as a (C,H,W) uint8 tensor with ``channels`` channels (1: grey, 3: RGB), resized
    to ``size`` (height, width) when given. Any Pillow mode is converted; alpha is composited on black."""
    from PIL import Image

    name = getattr(source, "name", source)
    try:
        Image.MAX_IMAGE_PIXELS = max_pixels
        with Image.open(source) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (0, 0, 0, 255))
                im = Image.alpha_composite(background, im)
            if channels == 1:
                im = im.convert("L")
            elif channels == 3:
                im = im.convert("RGB")
            else:
                raise ImageError(f"{name}: cannot convert an image to {channels} channels; "
                                 "models read 1 (grey) or 3 (RGB).")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such image file.") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name} is larger than {max_pixels:,} pixels; refusing to decode it.") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name} is not a readable image ({exc}). Use a PNG, JPEG, BMP, GIF or TIFF file.") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
