"""Image files in: sizes bounded before decoding (issue 24, item 1) and every Pillow mode converted by what its
values mean (item 5), each mode checked against numpy on the raw array. Dataset files: IDX and CIFAR archives
refused from their headers, without decompressing what they announce."""

import gzip
import io
import pickle
import struct
import tarfile
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data.formats import (ArchiveOrFolder, parse_cifar_meta, parse_cifar_python, parse_idx, read_cifar,
                                 read_idx, read_image)
from cnnkit.data.image_io import (MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS, check_image_size, open_image, scaled_size,
                                  shorter_side_size, to_8bit)
from cnnkit.errors import DataError, ImageError

PHOTO_CONFIG = {"resize": 256, "crop": 224, "interpolation": "bicubic"}  # efficientnet_lite0's evaluation transform


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def black_png(width: int, height: int) -> bytes:
    """A valid grey PNG of any size, written row by row so that a 10,000 x 10,000 image is never in memory."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    deflate = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the pixels
    pixels = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------------- item 1: sizes
def test_a_20000x1_strip_is_refused_for_its_aspect_ratio_before_decoding(tmp_path):
    path = tmp_path / "strip.png"
    path.write_bytes(png(Image.new("RGB", (20000, 1))))
    assert path.stat().st_size < 200  # the 138-byte file
    with pytest.raises(ImageError, match="aspect ratio"):
        read_image(path, 3)


def test_the_pretrained_photo_transform_refuses_a_2000x1_strip(tmp_path):
    from cnnkit.transfer import load_photo

    path = tmp_path / "strip.png"
    path.write_bytes(png(Image.new("RGB", (2000, 1))))
    with pytest.raises(ImageError, match="strip.png"):
        load_photo(path, PHOTO_CONFIG)  # before: a 256 x 512,000 float image, 1.85 GB


def test_the_pretrained_photo_transform_matches_one_whole_resize(tmp_path):
    """It resizes one channel at a time to bound memory; the result is the whole-image resize's."""
    import torch.nn.functional as F

    from cnnkit.transfer import load_photo

    pixels = np.random.default_rng(0).integers(0, 256, (300, 410, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    path.write_bytes(png(Image.fromarray(pixels)))
    whole = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    expected = F.interpolate(whole, size=(256, 350), mode="bicubic", align_corners=False, antialias=True)
    expected = expected[0, :, 16:240, 63:287].clamp(0, 255).round().to(torch.uint8)
    assert torch.equal(load_photo(path, PHOTO_CONFIG), expected)


def test_a_10000x10000_png_is_refused_as_a_cnnkit_error_not_a_warning(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(black_png(10000, 10000))
    assert path.stat().st_size < 200_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail the test
        with pytest.raises(ImageError, match="megapixels"):
            read_image(path, 1)


def test_the_decompression_bomb_check_reads_only_the_header():
    """A header claiming 200,000 x 200,000 pixels on a 1x1 image is refused by size, not by a decoding error."""
    data = bytearray(png(Image.new("L", (1, 1))))
    data[16:24] = struct.pack(">II", 200_000, 200_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    with pytest.raises(ImageError, match="megapixels"):
        open_image(bytes(data), 1)


def test_sizes_at_the_limits_are_accepted_and_beyond_them_refused():
    check_image_size(MAX_IMAGE_PIXELS // 1000, 1000)
    check_image_size(MAX_ASPECT_RATIO * 10, 10)
    for width, height in [(MAX_IMAGE_PIXELS // 1000 + 1, 1000), (MAX_ASPECT_RATIO * 10 + 1, 10), (0, 5)]:
        with pytest.raises(ImageError):
            check_image_size(width, height)


def test_resizes_are_sized_and_refused_before_allocating():
    assert shorter_side_size(640, 480, 256, 224) == (341, 256)
    assert scaled_size(10, 10, 0.01, 3, 4) == (3, 4)
    with pytest.raises(ImageError, match="would be resized"):
        shorter_side_size(20000, 1, 256, 224)
    with pytest.raises(ImageError, match="resize"):
        read_image(io.BytesIO(png(Image.new("L", (4, 4)))), 1, size=(30000, 30000))


def test_formats_that_run_other_programs_are_not_opened():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageError, match="not a readable image"):
        open_image(eps, 3)


# -------------------------------------------------------------------------------------- item 5: every mode
def rgb_from_cmyk(cmyk: np.ndarray) -> np.ndarray:
    c, m, y, k = (cmyk[..., i].astype(np.float64) for i in range(4))
    return np.stack([(255 - c) * (255 - k) / 255, (255 - m) * (255 - k) / 255, (255 - y) * (255 - k) / 255], -1)


def grey_from_rgb(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114  # ITU-R 601-2 luma


RNG = np.random.default_rng(24)
UINT16 = RNG.integers(0, 65536, (6, 7), dtype=np.uint16)
UINT8 = RNG.integers(0, 256, (6, 7, 4), dtype=np.uint8)
FLOAT = RNG.random((6, 7), dtype=np.float32)
PALETTE = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
INDICES = RNG.integers(0, 256, (6, 7), dtype=np.uint8)


def palette_image(transparent: int | None) -> Image.Image:
    image = Image.fromarray(INDICES).convert("P")
    image.putpalette(PALETTE.flatten().tolist())
    if transparent is not None:
        image.info["transparency"] = transparent
    return image


# mode -> (an image in that mode, the RGB [0, 255] floats it shows, computed with numpy from the raw values)
def cases():
    grey16 = np.repeat((UINT16 / 257.0)[..., None], 3, -1)
    alpha = UINT8[..., 3:4] / 255.0
    palette_rgb = PALETTE[INDICES].astype(np.float64)
    return {
        "I;16": (Image.fromarray(UINT16), grey16),
        "I;16B": (Image.frombytes("I;16B", (7, 6), UINT16.astype(">u2").tobytes()), grey16),
        "I": (Image.fromarray(UINT16.astype(np.int32)), grey16),
        "F": (Image.fromarray(FLOAT), np.repeat(FLOAT[..., None] * 255.0, 3, -1)),
        "F 0..255": (Image.fromarray(FLOAT * 255 + 1), np.repeat(np.clip(FLOAT * 255 + 1, 0, 255)[..., None], 3, -1)),
        "CMYK": (Image.frombytes("CMYK", (7, 6), UINT8.tobytes()), rgb_from_cmyk(UINT8)),
        "LA": (Image.frombytes("LA", (7, 6), np.ascontiguousarray(UINT8[..., [0, 3]]).tobytes()),
               np.repeat(UINT8[..., :1] * alpha, 3, -1)),
        "RGBA": (Image.fromarray(UINT8), UINT8[..., :3] * alpha),
        "P": (palette_image(None), palette_rgb),
        "P with transparency": (palette_image(7), np.where((INDICES == 7)[..., None], 0.0, palette_rgb)),
        "1": (Image.fromarray(UINT8[..., 0] > 127).convert("1"),
              np.repeat(np.where(UINT8[..., :1] > 127, 255.0, 0.0), 3, -1)),
        "L": (Image.fromarray(UINT8[..., 0]), np.repeat(UINT8[..., :1].astype(np.float64), 3, -1)),
        "RGB": (Image.fromarray(np.ascontiguousarray(UINT8[..., :3])), UINT8[..., :3].astype(np.float64)),
    }


@pytest.mark.parametrize("mode", list(cases()))
def test_every_mode_becomes_8bit_rgb_and_grey_by_what_its_values_mean(mode):
    image, expected_rgb = cases()[mode]
    rgb = np.asarray(to_8bit(image, 3), dtype=np.float64)
    grey = np.asarray(to_8bit(image, 1), dtype=np.float64)
    assert rgb.shape == (6, 7, 3) and grey.shape == (6, 7)
    # One level for rounding (Pillow's fixed-point conversions round differently from float numpy).
    assert np.abs(rgb - expected_rgb).max() <= 1.0
    assert np.abs(grey - grey_from_rgb(expected_rgb)).max() <= 1.0


@pytest.mark.parametrize("mode, suffix", [("I;16", ".png"), ("LA", ".png"), ("RGBA", ".png"),
                                          ("P with transparency", ".png"), ("1", ".png"), ("CMYK", ".tif"),
                                          ("CMYK", ".jpg"), ("F", ".tif"), ("I;16B", ".tif")])
def test_files_of_each_mode_read_as_numpy_computes_them(tmp_path, mode, suffix):
    image, _ = cases()[mode]
    path = tmp_path / f"image{suffix}"
    image.save(path, **({"quality": 100} if suffix == ".jpg" else {}))
    with Image.open(path) as stored:  # what the file holds, which JPEG has changed a little
        raw_mode = stored.mode
        expected = {"I;16": lambda a: a / 257.0, "I;16B": lambda a: a / 257.0, "F": lambda a: a * 255.0}.get(mode)
        raw = np.asarray(stored).astype(np.float64)
    grey = read_image(path, 1)[0].numpy().astype(np.float64)
    if expected is not None:  # the grey modes: scaled, never clipped
        assert np.abs(grey - expected(raw)).max() <= 0.5 + 1e-9, raw_mode
    rgb = read_image(path, 3).permute(1, 2, 0).numpy().astype(np.float64)
    assert np.abs(rgb - np.asarray(to_8bit(Image.open(path), 3))).max() == 0
    assert np.abs(grey - grey_from_rgb(rgb)).max() <= 1.0


def test_a_16_bit_digit_reads_as_its_8_bit_original(tmp_path):
    """The issue's case: a digit saved as a 16-bit PNG read at 37.7 mean instead of 23.5 (clipped to 255)."""
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 12:16] = np.linspace(80, 255, 16, dtype=np.uint8)[:, None]
    path = tmp_path / "digit16.png"
    Image.fromarray(digit.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode.startswith("I")
    assert np.array_equal(read_image(path, 1)[0].numpy(), digit)


# ------------------------------------------------------------------------------------------- dataset files
def idx_header(shape, dtype_code=0x08) -> bytes:
    return bytes([0, 0, dtype_code, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)


def gzip_of(header: bytes, zeros: int) -> bytes:
    """``header`` then ``zeros`` zero bytes, gzipped a block at a time."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=1) as out:
        out.write(header)
        for start in range(0, zeros, 1 << 20):
            out.write(bytes(min(1 << 20, zeros - start)))
    return buffer.getvalue()


def peak_bytes(function) -> tuple[object, int]:
    tracemalloc.start()
    try:
        try:
            result = function()
        except (DataError, ImageError) as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("shape, zeros, message", [((2, 2), 64 << 20, "more data"),
                                                   ((1 << 16, 1 << 16), 1 << 20, "larger than")])
def test_an_idx_gzip_bomb_is_refused_without_decompressing_it(tmp_path, shape, zeros, message):
    path = tmp_path / "bomb-idx1-ubyte.gz"
    path.write_bytes(gzip_of(idx_header(shape), zeros))
    error, peak = peak_bytes(lambda: read_idx(path))
    assert isinstance(error, DataError) and message in str(error)
    assert peak < 4 << 20  # before: the whole 64 MB stream in memory


def test_idx_files_stream_back_exactly(tmp_path):
    values = np.arange(2 * 3 * 5, dtype=">i2").reshape(2, 3, 5)
    raw = idx_header((2, 3, 5), 0x0B) + values.tobytes()
    (tmp_path / "a.idx").write_bytes(raw)
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(raw))
    for name in ("a.idx", "a.idx.gz"):
        assert np.array_equal(read_idx(tmp_path / name), values)
    for cut in (raw[:-1], raw + b"\0"):
        (tmp_path / "b.idx").write_bytes(cut)
        (tmp_path / "b.idx.gz").write_bytes(gzip.compress(cut))
        for name in ("b.idx", "b.idx.gz"):
            with pytest.raises(DataError, match="header promises"):
                read_idx(tmp_path / name)


def test_a_cifar_tarball_with_an_oversized_member_is_refused_from_its_header(tmp_path):
    path = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = 32 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    error, peak = peak_bytes(lambda: ArchiveOrFolder(path, max_member_bytes=1 << 20))
    assert isinstance(error, DataError) and "data_batch_1.bin" in str(error)
    assert peak < 4 << 20


class Call:
    """Pickles as ``function(*args)``: how a hostile batch would ask numpy to allocate."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def test_the_restricted_unpickler_refuses_arrays_larger_than_the_file():
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    for hostile in (Call(reconstruct, np.ndarray, (1 << 40,), b"b"), Call(np.ndarray, (1 << 40,))):
        data = pickle.dumps({b"data": hostile, b"labels": []}, protocol=2)
        with pytest.raises(DataError, match="refusing"):
            parse_cifar_python(data, "batch")


def test_the_restricted_unpickler_still_reads_real_batches():
    images = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    for protocol in (2, 4, 5):
        data = pickle.dumps({b"data": images, b"labels": [3, 7]}, protocol=protocol)
        read, labels = parse_cifar_python(data, "batch")
        assert np.array_equal(read.reshape(2, -1), images) and labels.tolist() == [3, 7]


# What the fuzzers (tests/test_fuzz.py) found, each an exception other than a DataError before the fix.
@pytest.mark.parametrize("parse, data, message", [
    (parse_idx, bytes([0, 0, 0x0B, 4]) + bytes(4) + b"\x40\xac\x1e\x00" * 3, "larger than"),  # numpy ValueError
    (parse_cifar_meta, b"\x80\x02N.", "pickled dict"),  # AttributeError: None has no items()
    # LookupError: _codecs.encode("a", "zzz")
    (parse_cifar_python, b"\x80\x04c_codecs\nencode\nX\x01\x00\x00\x00aX\x03\x00\x00\x00zzz\x86R.", "encode"),
    (parse_cifar_python, pickle.dumps({1: 2, "a": 3}, protocol=2), "needs 'data'"),  # TypeError sorting the keys
    (parse_cifar_python, pickle.dumps({b"data": ["x"] * 3072, b"labels": [1]}, protocol=2), "not arrays"),
])
def test_inputs_the_fuzzers_found_are_data_errors(parse, data, message):
    with pytest.raises(DataError, match=message):
        parse(data, "fuzzed")


def test_class_names_that_are_not_text_are_a_data_error(tmp_path):
    """Found by fuzzing: a batches.meta.txt that is not UTF-8 raised UnicodeDecodeError from read_cifar."""
    path = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [(f"data_batch_{i}.bin", bytes(3073)) for i in range(1, 6)] + \
                [("test_batch.bin", bytes(3073)), ("batches.meta.txt", b"\x80cat")]:
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match="batches.meta.txt is not a text file"):
        read_cifar(path, "binary", 10)
