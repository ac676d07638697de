"""The fuzzers of cnnkit's parsers of untrusted bytes: a hypothesis strategy of inputs and a property for each.

Shared by tests/test_fuzz.py (a few hundred examples each, in CI) and benchmarks/fuzz.py (longer runs that
count what they tried). The property of every parser is the same: given any bytes it returns a result that
is what the bytes declare (checked per parser), or raises a CnnkitError; any other exception is a crash.

Inputs are built, not only drawn at random: a valid file of each format, then mutated (bytes flipped,
inserted, cut) or with header fields rewritten and their checksums recomputed, so the fuzzers get past the
magic numbers and CRCs into the code behind them.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import tarfile
import tempfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from hypothesis import strategies as st

from cnnkit.errors import CnnkitError


class ParserCrash(AssertionError):
    """A parser raised something other than a CnnkitError, or returned a result its input does not declare."""


TALLY: Counter = Counter()  # (parser, "result" | "refused") -> count; benchmarks/fuzz.py reports it


def outcome(parser: str, call):
    """``call()``'s result, or None when it raised a CnnkitError; any other exception is a ParserCrash."""
    try:
        result = call()
    except CnnkitError:
        TALLY[parser, "refused"] += 1
        return None
    except Exception as exc:
        raise ParserCrash(f"{parser}: {type(exc).__name__}: {exc}") from exc
    TALLY[parser, "result"] += 1
    return result


def expect(condition: bool, parser: str, what: str) -> None:
    if not condition:
        raise ParserCrash(f"{parser}: {what}")


# --------------------------------------------------------------------------------------------- mutations
@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` unchanged, or with a few bytes flipped, inserted or deleted, or cut short."""
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "cut", "none"]))
        if not data or kind == "none":
            continue
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


def _temporary_file(data: bytes, name: str):
    folder = tempfile.TemporaryDirectory(prefix="cnnkit-fuzz-")
    path = Path(folder.name) / name
    path.write_bytes(data)
    return folder, path


# ----------------------------------------------------------------------------------------------------- IDX
IDX_CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


@st.composite
def idx_files(draw) -> tuple[bytes, bool]:
    """(file bytes, gzipped): IDX arrays of every element type and rank, sizes off by a little or by a lot."""
    code = draw(st.sampled_from(IDX_CODES + [0x00, 0x0A, 0xFF]))
    rank = draw(st.integers(0, 4))
    shape = draw(st.lists(st.integers(0, 6) | st.integers(0, 2**32 - 1), min_size=rank, max_size=rank))
    header = bytes([0, 0, code, rank]) + b"".join(n.to_bytes(4, "big") for n in shape)
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
    size = int(np.prod(shape, dtype=object)) * itemsize if shape else 0
    length = min(max(0, size + draw(st.integers(-3, 3))), 4096)
    data = draw(mutated(header + draw(st.binary(min_size=length, max_size=length))))
    gzipped = draw(st.booleans())
    if gzipped:
        data = draw(mutated(gzip.compress(data, 1)))
    return data, gzipped


def check_idx(example) -> None:
    from cnnkit.data.formats import parse_idx, read_idx

    data, gzipped = example
    folder, path = _temporary_file(data, "fuzz.idx.gz" if gzipped else "fuzz.idx")
    with folder:
        array = outcome("read_idx", lambda: read_idx(path))
    if array is not None:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(raw[3]))
        expect(array.shape == shape and array.nbytes == len(raw) - 4 - 4 * raw[3], "read_idx",
               f"returned {array.shape} for a header of {shape}")
    if not gzipped:
        parsed = outcome("parse_idx", lambda: parse_idx(data))
        expect((parsed is None) == (array is None), "parse_idx", "disagrees with read_idx")


# --------------------------------------------------------------------------------------------------- CIFAR
@st.composite
def cifar_binary_batches(draw) -> tuple[bytes, int]:
    label_bytes = draw(st.sampled_from([1, 2]))
    records = draw(st.integers(0, 3))
    record = label_bytes + 3072
    length = max(0, records * record + draw(st.sampled_from([0, 0, -1, 1, -record, 7])))
    return draw(st.binary(min_size=min(length, 64), max_size=min(length, 64))) + bytes(max(0, length - 64)), \
        label_bytes


def check_cifar_binary(example) -> None:
    from cnnkit.data.formats import parse_cifar_binary

    data, label_bytes = example
    result = outcome("parse_cifar_binary", lambda: parse_cifar_binary(data, label_bytes, "fuzz"))
    if result is not None:
        images, labels = result
        expect(images.shape == (len(data) // (3072 + label_bytes), 3, 32, 32) and len(labels) == len(images),
               "parse_cifar_binary", f"{images.shape} images from {len(data)} bytes")


PICKLE_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.binary(max_size=16)
    | st.text(max_size=8)
    | st.builds(lambda shape, dtype: np.zeros(shape, dtype=dtype),
                st.lists(st.integers(0, 4), max_size=3).map(tuple),
                st.sampled_from(["u1", "i8", "f4", "f8", "O", "U3", "V2", "b1"]))
    | st.builds(lambda n: np.arange(n * 3072, dtype=np.uint8).reshape(n, 3072), st.integers(0, 2)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.binary(max_size=12) | st.text(max_size=12)
                                                                      | st.integers(), children, max_size=4)
    | st.tuples(children, children),
    max_leaves=12)

CIFAR_KEYS = st.sampled_from([b"data", b"labels", b"fine_labels", "data", "labels", b"label_names",
                              b"fine_label_names", b"batch_label", b"filenames"])


def _pickle_global(module: str, name: str, args: tuple, protocol: int) -> bytes:
    """A pickle calling ``module.name(*args)`` without importing it here: written opcode by opcode."""
    body = pickle.dumps(args, protocol=2)[2:-1]  # the argument tuple's opcodes, without PROTO and STOP
    return bytes([0x80, protocol]) + b"c" + f"{module}\n{name}\n".encode() + body + b"R."


@st.composite
def cifar_pickles(draw) -> bytes:
    """Pickles of CIFAR-like dicts (real arrays and labels, wrong types and shapes), with hostile calls."""
    batch = draw(st.dictionaries(CIFAR_KEYS, PICKLE_VALUES, max_size=4))
    if draw(st.booleans()):
        count = draw(st.integers(0, 3))
        batch[b"data"] = np.zeros((count, 3072), dtype=draw(st.sampled_from(["u1", "i4", "f4"])))
        batch[b"labels"] = draw(st.lists(st.integers(-300, 300), min_size=count, max_size=count + 1))
    protocol = draw(st.integers(2, 5))
    kind = draw(st.sampled_from(["batch", "batch", "global", "not a dict"]))
    if kind == "global":
        module, name = draw(st.sampled_from([
            ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy._core.multiarray", "scalar"),
            ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode"), ("os", "system"),
            ("builtins", "eval"), ("numpy", "zeros")]))
        args = tuple(draw(st.lists(st.integers(-1, 2**40) | st.binary(max_size=8) | st.text(max_size=4)
                                   | st.tuples(st.integers(0, 2**40)) | st.just("u1"), max_size=4)))
        data = _pickle_global(module, name, args, protocol)
    else:
        data = pickle.dumps(batch if kind == "batch" else draw(PICKLE_VALUES), protocol=protocol)
    return draw(mutated(data))


def check_cifar_pickle(data: bytes) -> None:
    from cnnkit.data.formats import parse_cifar_meta, parse_cifar_python

    result = outcome("parse_cifar_python", lambda: parse_cifar_python(data, "fuzz"))
    if result is not None:
        images, labels = result
        expect(images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32) and len(labels) == len(images),
               "parse_cifar_python", f"returned images {images.shape} and {len(labels)} labels")
    names = outcome("parse_cifar_meta", lambda: parse_cifar_meta(data, "fuzz"))
    expect(names is None or all(isinstance(n, str) for n in names), "parse_cifar_meta", "returned non-strings")


@st.composite
def cifar_archives(draw) -> bytes:
    """tar.gz releases of CIFAR-10 binary batches: whole, or with one flaw (a member missing, cut or lying about
    its size, an empty batch, damaged compressed bytes)."""
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin", "batches.meta.txt"]
    flaw = draw(st.sampled_from(["none", "missing", "cut", "empty", "damaged"]))
    flawed = draw(st.sampled_from(names))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))  # batches' bytes: too many for hypothesis to draw
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name in names:
            if name.endswith(".txt"):
                data = draw(st.binary(max_size=40) | st.just(b"airplane automobile bird cat deer dog"))
            else:
                data = rng.bytes(3073 * draw(st.integers(1, 2)))
            if name == flawed and flaw == "missing":
                continue
            if name == flawed and flaw in ("cut", "empty"):
                data = data[:draw(st.integers(0, max(0, len(data) - 1)))] if flaw == "cut" else b""
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    return draw(mutated(data)) if flaw == "damaged" else data


def check_cifar_archive(data: bytes) -> None:
    from cnnkit.data.formats import read_cifar

    folder, path = _temporary_file(data, "cifar-10-binary.tar.gz")
    with folder:
        result = outcome("read_cifar", lambda: read_cifar(path, "binary", 10))
    if result is not None:
        images, labels = result["train"]
        expect(images.shape[1:] == (3, 32, 32) and len(images) == len(labels), "read_cifar", "bad shapes")


# -------------------------------------------------------------------------------------------------- images
IMAGE_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "I;16B", "F"]
# Formats each mode can be saved in (Pillow writes these modes natively in these formats).
SAVABLE = {"1": ["PNG", "BMP", "TIFF", "GIF", "PPM"], "L": ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "PPM"],
           "LA": ["PNG", "TIFF"], "P": ["PNG", "BMP", "GIF", "TIFF"],
           "RGB": ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "PPM"], "RGBA": ["PNG", "TIFF", "WEBP", "GIF"],
           "CMYK": ["JPEG", "TIFF"], "YCbCr": ["JPEG", "TIFF"], "I": ["TIFF"], "I;16": ["PNG", "TIFF"],
           "I;16B": ["TIFF"], "F": ["TIFF"]}


def _patch_png_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR declares another size, its CRC recomputed so the lie gets past the checksum."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return data
    patched = bytearray(data)
    patched[16:24] = struct.pack(">II", width, height)
    patched[29:33] = struct.pack(">I", zlib.crc32(bytes(patched[12:29])))
    return bytes(patched)


@st.composite
def image_files(draw) -> tuple[bytes, int]:
    """(file bytes, channels wanted): every mode, sizes from 1x1 to strips, every format, then damaged."""
    from PIL import Image

    mode = draw(st.sampled_from(IMAGE_MODES))
    width, height = draw(st.sampled_from([(1, 1), (3, 2), (17, 9), (40, 40), (200, 1), (1, 120), (60, 2)])
                         | st.tuples(st.integers(1, 48), st.integers(1, 48)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = Image.frombytes(mode, (width, height), rng.bytes(len(Image.new(mode, (width, height)).tobytes())))
    if mode in ("P", "PA"):
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        if draw(st.booleans()):
            image.info["transparency"] = int(rng.integers(0, 256))
    image_format = draw(st.sampled_from(SAVABLE[mode]))
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    data = buffer.getvalue()
    if draw(st.integers(0, 4)) == 0:
        data = _patch_png_size(data, draw(st.integers(0, 2**31 - 1) | st.integers(0, 70000)),
                               draw(st.integers(0, 2**31 - 1) | st.integers(0, 70000)))
    return draw(mutated(data)), draw(st.sampled_from([1, 3]))


def check_image(example) -> None:
    from cnnkit.data.formats import read_image
    from cnnkit.data.image_io import MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS, open_image

    data, channels = example
    image = outcome("open_image", lambda: open_image(data, channels))
    if image is not None:
        width, height = image.size
        expect(image.mode == ("L" if channels == 1 else "RGB"), "open_image", f"returned mode {image.mode}")
        expect(width * height <= MAX_IMAGE_PIXELS and max(width, height) <= MAX_ASPECT_RATIO * min(width, height),
               "open_image", f"decoded a {width}x{height} image")
    tensor = outcome("read_image", lambda: read_image(io.BytesIO(data), channels, (8, 8)))
    expect(tensor is None or (tensor.shape == (channels, 8, 8) and tensor.dtype == torch.uint8), "read_image",
           "returned a tensor of the wrong shape")


# --------------------------------------------------------------------------------------------- safetensors
SAFETENSORS_DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "X9", ""]


@st.composite
def safetensors_files(draw) -> bytes:
    """safetensors files: real ones written by safetensors, damaged, or with a rewritten JSON header."""
    from safetensors.torch import save

    tensors = draw(st.dictionaries(st.text("abcdefgh.", min_size=1, max_size=6),
                                   st.tuples(st.sampled_from([torch.float32, torch.float16, torch.int64, torch.uint8,
                                                              torch.bool]),
                                             st.lists(st.integers(0, 4), max_size=3)), max_size=3))
    data = save({k: torch.zeros(shape, dtype=dtype) for k, (dtype, shape) in tensors.items()})
    kind = draw(st.sampled_from(["damaged", "header", "length"]))
    if kind == "header":
        length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + length])
        for entry in [v for k, v in header.items() if k != "__metadata__"]:
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "none"]))
            if field == "dtype":
                entry["dtype"] = draw(st.sampled_from(SAFETENSORS_DTYPES))
            elif field == "shape":
                entry["shape"] = draw(st.lists(st.integers(-1, 2**40), max_size=4))
            elif field == "data_offsets":
                entry["data_offsets"] = draw(st.lists(st.integers(-1, 2**40), min_size=0, max_size=3))
        if draw(st.booleans()):
            header["__metadata__"] = draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4)
                                                          | st.integers(), max_size=2))
        encoded = json.dumps(header).encode()
        data = len(encoded).to_bytes(8, "little") + encoded + data[8 + length:]
    elif kind == "length":
        data = draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little") + data[8:]
    return draw(mutated(data))


def check_safetensors(data: bytes) -> None:
    from cnnkit.train.checkpoint import read_tensors
    from cnnkit.weights import read_state_dict

    folder, path = _temporary_file(data, "fuzz.safetensors")
    with folder:
        for parser, read in (("read_tensors", lambda: read_tensors(path)[0]),
                             ("read_state_dict", lambda: read_state_dict(path))):
            tensors = outcome(parser, read)
            expect(tensors is None or all(isinstance(t, torch.Tensor) for t in tensors.values()), parser,
                   "returned something other than tensors")


# ---------------------------------------------------------------------------------------------------- .cnk
_CODEC = {}


def codec():
    """A small random compressor (the fuzzers test the file format, not the codec's quality) and its tables."""
    if not _CODEC:
        from cnnkit.compress.model import FactorizedPriorCompressor

        torch.manual_seed(0)
        model = FactorizedPriorCompressor(in_channels=3, channels=8, latent_channels=4).eval()
        _CODEC["model"], _CODEC["tables"] = model, model.entropy_model.coding_tables()
    return _CODEC["model"], _CODEC["tables"]


def _recrc(data: bytearray) -> bytes:
    from cnnkit.compress.bitstream import _CRC, _FIELDS, HEADER_BYTES

    crc = zlib.crc32(bytes(data[HEADER_BYTES:]), zlib.crc32(bytes(data[:_FIELDS.size])))
    data[_FIELDS.size:HEADER_BYTES] = _CRC.pack(crc)
    return bytes(data)


@st.composite
def cnk_files(draw) -> bytes:
    """.cnk files of small images: damaged, or with header fields and payload rewritten and the CRC fixed."""
    from cnnkit.compress.bitstream import _FIELDS, compress_image

    model, tables = codec()
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    image = torch.from_numpy(np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
                             .integers(0, 256, (3, height, width), dtype=np.uint8))
    data = bytearray(compress_image(model, image, tables))
    kind = draw(st.sampled_from(["damaged", "fields", "payload"]))
    if kind == "damaged":
        return draw(mutated(bytes(data)))
    if kind == "fields":
        fields = list(_FIELDS.unpack_from(data))  # magic, version, channels, height, width, M, h, w, print, length
        index = draw(st.integers(1, len(fields) - 1))
        limit = 255 if index < 3 else 65535 if index < 8 else 2**32 - 1
        fields[index] = draw(st.integers(0, limit) | st.integers(max(0, fields[index] - 2), fields[index] + 2)
                             .map(lambda value: min(value, limit)))
        if draw(st.booleans()):  # a consistent latent size, so the lie reaches the decoder
            fields[6], fields[7] = -(-fields[3] // 16) & 0xFFFF, -(-fields[4] // 16) & 0xFFFF
        data[:_FIELDS.size] = _FIELDS.pack(*fields)
        return _recrc(data)
    from cnnkit.compress.bitstream import HEADER_BYTES

    payload = draw(mutated(bytes(data[HEADER_BYTES:])))
    data = bytearray(data[:HEADER_BYTES]) + payload
    data[20:24] = struct.pack(">I", len(payload))
    return _recrc(data)


def check_cnk(data: bytes) -> None:
    from cnnkit.compress.bitstream import decompress, read_header

    model, tables = codec()
    image = outcome("decompress", lambda: decompress(model, data, tables))
    if image is not None:
        header = read_header(data)
        expect(image.dtype == torch.uint8 and tuple(image.shape) == (header.channels, header.height, header.width),
               "decompress", f"returned {tuple(image.shape)} for a header of {header}")


# name -> (strategy, property); the order is the report's
PARSERS = {
    "idx": (idx_files(), check_idx),
    "cifar_binary": (cifar_binary_batches(), check_cifar_binary),
    "cifar_python": (cifar_pickles(), check_cifar_pickle),
    "cifar_archive": (cifar_archives(), check_cifar_archive),
    "image": (image_files(), check_image),
    "safetensors": (safetensors_files(), check_safetensors),
    "cnk": (cnk_files(), check_cnk),
}
