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
import math
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError, ImageError
from .image_io import MAX_IMAGE_PIXELS, check_image_size, open_image, read_image  # noqa: F401 (re-export)

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# The largest IDX array read (EMNIST ByClass's training images are 547 MB); a header declaring more is refused
# before anything is decompressed or allocated.
MAX_IDX_BYTES = 1 << 30


def _idx_header(head: bytes, source: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the first 4 bytes of an IDX file and the 4-byte sizes after them (as many as given)."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DataError(f"{source} is not an IDX file (bad magic number {head[:4].hex()}).")
    dtype_code, ndim = head[2], head[3]
    if dtype_code not in IDX_DTYPES or ndim == 0:
        raise DataError(f"{source}: unknown IDX element type 0x{dtype_code:02x} or rank {ndim}.")
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"{source} is truncated: its IDX header is incomplete.")
    shape = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[dtype_code])
    # With a zero among them, the other sizes can be anything and the data still empty; numpy refuses shapes
    # whose nonzero sizes multiply past its limit, so bound them as if the array were full.
    if math.prod(max(n, 1) for n in shape) * dtype.itemsize > MAX_IDX_BYTES:
        raise DataError(f"{source}: its IDX header declares shape {shape}, larger than any dataset file "
                        f"({MAX_IDX_BYTES:,} bytes); the file is corrupt.")
    return shape, dtype


def _idx_mismatch(source: str, shape, expected: int, found: str) -> DataError:
    return DataError(f"{source}: the header promises shape {shape} ({expected:,} bytes) but the file has {found}; "
                     "it is truncated or corrupt. Delete it and download it again.")


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse an IDX array: magic 0x0000 TT DD (type, number of dims), DD big-endian int32 sizes, then data."""
    shape, dtype = _idx_header(data[:4 + 4 * data[3]] if len(data) >= 4 else data, source)
    header = 4 + 4 * len(shape)
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise _idx_mismatch(source, shape, expected, f"{len(data):,} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: Path, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """An IDX file, raw or gzipped, streamed: the header is read and checked first, then exactly the bytes it
    declares are decompressed into one preallocated array; a declared size over ``max_bytes``, a short
    stream or data beyond the declared size is a DataError, so a gzip bomb costs a few kilobytes of work."""
    path = Path(path)
    source = str(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
            head = stream.read(4)
            shape, dtype = _idx_header(head + stream.read(4 * head[3]) if len(head) == 4 else head, source)
            payload = math.prod(shape) * dtype.itemsize
            if payload > max_bytes:
                raise DataError(f"{source}: its IDX header declares shape {shape} ({payload:,} bytes), more than "
                                f"the {max_bytes:,}-byte limit; the file is corrupt or not a dataset file.")
            if not gzipped and (size := path.stat().st_size) != 4 + 4 * len(shape) + payload:
                raise _idx_mismatch(source, shape, 4 + 4 * len(shape) + payload, f"{size:,} bytes")
            array = np.empty(payload, dtype=np.uint8)
            filled, view = 0, memoryview(array)
            while filled < payload and (count := stream.readinto(view[filled:])):
                filled += count
            if filled < payload:
                raise _idx_mismatch(source, shape, payload, f"only {filled:,} data bytes")
            if stream.read(1):
                raise _idx_mismatch(source, shape, payload, "more data than that")
    except FileNotFoundError:
        raise DataError(f"{source}: no such file.") from None
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{source} is a corrupt or truncated gzip file ({exc}). "
                        "Delete it and download it again.") from None
    return array.view(dtype).reshape(shape)


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
    the few numpy reconstructors, so a hostile file fails with a DataError instead. Those reconstructors can
    still allocate whatever shape they are handed, so they are wrapped: an array or scalar may not be larger
    than the pickle itself (its values must come from the file), and ``ndarray`` may only be named as the
    type to reconstruct, not called.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol-5 pickles: a view of bytes already in the file
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # python-2 pickles store some byte strings this way
    }

    def __init__(self, file, max_array_bytes: int, **kwargs):
        super().__init__(file, **kwargs)
        self.max_array_bytes = max_array_bytes

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        found = super().find_class(module, name)
        if name == "ndarray":
            return _NdarrayName
        if name == "_reconstruct":
            return lambda *args: self._reconstruct(found, *args)
        if name == "scalar":
            return lambda *args: self._scalar(found, *args)
        if name == "encode":
            return _latin1_encode
        return found

    def _reconstruct(self, reconstruct, subtype, shape, dtype):
        if subtype is not _NdarrayName:
            _refuse(f"reconstructing a {subtype!r}")
        return reconstruct(np.ndarray, self._bounded(shape, np.uint8, "array"), dtype)

    def _scalar(self, scalar, dtype, *value):
        if not isinstance(dtype, np.dtype):
            _refuse(f"a scalar of type {dtype!r}")
        self._bounded((1,), dtype, "scalar")
        return scalar(dtype, *value)

    def _bounded(self, shape, dtype, what: str):
        """``shape`` when an array of it fits in the pickle's size; refused otherwise."""
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            _refuse(f"an {what} of shape {shape!r}")
        if math.prod(shape) * np.dtype(dtype).itemsize > self.max_array_bytes:
            _refuse(f"an {what} of shape {shape} ({np.dtype(dtype)}), larger than the file")
        return shape


class _NdarrayName:
    """Stands for numpy.ndarray in a pickle: the subtype handed to _reconstruct, never called itself."""

    def __new__(cls, *args, **kwargs):
        _refuse("calling numpy.ndarray directly")


def _latin1_encode(text, encoding="latin1"):
    """What python 2 pickles call ``_codecs.encode`` for: latin-1 byte strings; no other codec is looked up."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        _refuse(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin-1")


def _refuse(what: str):
    raise pickle.UnpicklingError(f"refusing {what}")


def restricted_loads(data: bytes, source: str = "<bytes>"):
    try:
        return RestrictedUnpickler(io.BytesIO(data), max_array_bytes=len(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError, RecursionError, LookupError) as exc:
        raise DataError(f"{source} is not a plain CIFAR python batch ({exc}); refusing to read it.") from None


def _pickled_dict(data: bytes, source: str) -> dict:
    """The dict a CIFAR python pickle holds, with byte-string keys (python 2's) decoded."""
    loaded = restricted_loads(data, source)
    if not isinstance(loaded, dict):
        raise DataError(f"{source}: expected a pickled dict, found {type(loaded).__name__}; it is not a CIFAR "
                        "python batch.")
    return {k.decode(errors="replace") if isinstance(k, bytes) else k: v for k, v in loaded.items()}


def parse_cifar_python(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _pickled_dict(data, source)
    label_key = "labels" if "labels" in batch else "fine_labels"
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{source}: a CIFAR python batch needs 'data' and 'labels' (or 'fine_labels'); "
                        f"has {sorted(map(str, batch))}.")
    try:
        images = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:  # strings, dicts, ragged lists, values out of range
        raise DataError(f"{source}: 'data' and '{label_key}' are not arrays of pixels and labels ({exc}).") from None
    if images.ndim != 2 or images.shape[1] != CIFAR_IMAGE_BYTES or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{source}: data of shape {images.shape} and labels of shape {labels.shape} are not CIFAR "
                        "batches.")
    return images.reshape(-1, 3, 32, 32), labels


def parse_class_names(data: bytes, source: str) -> list[str]:
    """Class names from a binary release's text file (``batches.meta.txt``), one per line."""
    try:
        return data.decode("utf-8").split()
    except UnicodeDecodeError as exc:
        raise DataError(f"{source} is not a text file of class names ({exc}); the archive is corrupt.") from None


def parse_cifar_meta(data: bytes, source: str) -> list[str]:
    """Class names from a python ``batches.meta``/``meta`` pickle."""
    meta = _pickled_dict(data, source)
    names = meta.get("label_names", meta.get("fine_label_names", []))
    if not isinstance(names, (list, tuple)):
        raise DataError(f"{source}: the class names are a {type(names).__name__}, not a list of names.")
    return [n.decode(errors="replace") if isinstance(n, bytes) else str(n) for n in names]


# Bounds on what a dataset archive may hold, checked from the tar headers before any member is read: CIFAR-100's
# largest batch is 155 MB, the JPEG copy of CIFAR-10 has 60,000 members of about 1 KB.
MAX_MEMBER_BYTES = 256 * 2**20
MAX_JPEG_MEMBER_BYTES = 2**20
MAX_ARCHIVE_MEMBERS = 200_000


class ArchiveOrFolder:
    """Uniform read access to members of a ``.tar.gz`` or a plain folder, by relative name suffix.

    A member larger than ``max_member_bytes``, or an archive of more than ``max_members`` entries, is refused
    while the headers are listed, before its data is decompressed (a tar.gz bomb costs no memory)."""

    def __init__(self, path: Path, max_member_bytes: int = MAX_MEMBER_BYTES, max_members: int = MAX_ARCHIVE_MEMBERS):
        self.path = Path(path)
        self.max_member_bytes = max_member_bytes
        self._tar = None
        if self.path.is_file():
            try:
                self._tar = tarfile.open(self.path, "r:*")
                self._members = self._list_members(max_members)
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                self.close()
                raise DataError(f"{self.path} is a corrupt or truncated archive ({exc}). "
                                "Delete it and download it again.") from None
            except DataError:
                self.close()
                raise
        else:
            self._members = {str(p.relative_to(self.path)): p for p in self.path.rglob("*") if p.is_file()}

    def _list_members(self, max_members: int) -> dict[str, tarfile.TarInfo]:
        members = {}
        for count, member in enumerate(self._tar, 1):
            if count > max_members:
                raise DataError(f"{self.path} holds more than {max_members:,} entries; it is not a dataset "
                                "release. Delete it and download it again.")
            if member.isfile():
                self._check_size(member.name, member.size)
                members[member.name] = member
        self._tar.members = []  # tarfile keeps every header it has read; the files' are in our dict
        return members

    def _check_size(self, name: str, size: int, limit: int | None = None) -> None:
        limit = self.max_member_bytes if limit is None else min(limit, self.max_member_bytes)
        if size > limit:
            raise DataError(f"{self.path}: member {name} is {size:,} bytes, more than the {limit:,} bytes a dataset "
                            "file of this kind can be; the archive is corrupt or not the expected release.")

    def names(self) -> list[str]:
        return sorted(self._members)

    def find(self, suffix: str) -> str | None:
        for name in self.names():
            if name == suffix or name.endswith("/" + suffix):
                return name
        return None

    def read(self, name: str, max_bytes: int | None = None) -> bytes:
        member = self._members[name]
        self._check_size(name, member.size if self._tar else member.stat().st_size, max_bytes)
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
            classes = parse_class_names(src.read(meta), f"{path}:{meta}") if meta else []
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
                    arr = np.asarray(open_image(src.read(name, MAX_JPEG_MEMBER_BYTES), 3, f"{path}: {name}"))
                except ImageError as exc:
                    raise DataError(str(exc)) from None
                if arr.shape != (32, 32, 3):
                    raise DataError(f"{path}: {name} is {arr.shape[1]}x{arr.shape[0]}, expected 32x32.")
                images[k], labels[k] = arr, index[cls]
            out[split] = (images.transpose(0, 3, 1, 2).copy(), labels)
    finally:
        src.close()
    return out


# ----------------------------------------------------------------------------------------------- image files
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
