"""Untrusted image files in, 8-bit grey or RGB pictures out, with every size bounded before it is allocated.

Every tool that opens an image file or upload (predict, the pretrained classifier, the viz inputs, style,
segment, denoise, compress, the image-folder datasets and the web playground) goes through :func:`open_image`,
and every resize whose output size depends on the file (shorter side to N pixels) asks :func:`scaled_size`
first. The tensor side is here too: :func:`read_image` (uint8, C x H x W), :func:`load_image` (floats in
[0, 1], longer side bounded), :func:`resize_longer_side` and :func:`save_image`, which style, compress,
denoise, segment and translate all use. The bounds:

- **pixels**: Pillow's ``Image.open`` is lazy and reads only the header, so the declared size is checked
  against :data:`MAX_IMAGE_PIXELS` before a pixel is decoded. A 200-byte PNG can declare 10,000 x 10,000
  pixels (a decompression bomb); Pillow itself only warns below 179 megapixels.
- **aspect ratio**: a 20000 x 1 strip is only 20,000 pixels, but resizing its shorter side to 256 asks for a
  5,120,000 x 256 image (5.8 GB in float). :data:`MAX_ASPECT_RATIO` refuses such shapes at the header, and
  :func:`scaled_size` refuses any resize whose output would exceed the pixel budget.
- **formats**: only the common raster formats are opened (:data:`IMAGE_FORMATS`); Pillow's other plugins
  (EPS runs Ghostscript, PDF, ...) are not offered untrusted bytes.

:func:`to_8bit` converts every Pillow mode the way its numbers mean, not the way ``Image.convert`` clips them:
16-bit grey (``I;16*``, and ``I`` as 16-bit PNG/TIFF store it) is scaled by 255/65535 rather than clipped at
255, float images (``F``) in [0, 1] are scaled by 255, alpha (LA, RGBA, PA, P or L/RGB with a transparent
colour) is composited on black, CMYK goes through the usual (1-C)(1-K) formula.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ImageError

MAX_IMAGE_PIXELS = 40_000_000  # a 40-megapixel photo (7,300 x 5,480) fits; a 10,000 x 10,000 image does not
MAX_ASPECT_RATIO = 50  # longer side / shorter side: a 360-degree panorama (about 8:1 to 12:1) fits
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "PPM")  # JPEG includes multi-picture (MPO)

# What Pillow raises on truncated or corrupt data, besides OSError: its parsers index, unpack and divide
# header fields they have not validated. Caught only around Pillow's own calls.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError,
                  ZeroDivisionError, OverflowError)

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("LA", "PA", "RGBA")
_PREMULTIPLIED_MODES = ("La", "RGBa")  # colour already multiplied by alpha: composited on black as stored


def check_image_size(width: int, height: int, source: str = "the image", max_pixels: int = MAX_IMAGE_PIXELS,
                     max_aspect_ratio: float = MAX_ASPECT_RATIO) -> None:
    """Refuse an image size (from a header, before decoding) that would exhaust memory when decoded or resized."""
    if width < 1 or height < 1:
        raise ImageError(f"{source} declares a size of {width} x {height} pixels; it is empty or corrupt.")
    if width * height > max_pixels:
        raise ImageError(f"{source} is {width:,} x {height:,} pixels ({width * height / 1e6:.0f} megapixels); "
                         f"images are limited to {max_pixels / 1e6:.0f} megapixels. Resize it first.")
    if max(width, height) > max_aspect_ratio * min(width, height):
        raise ImageError(f"{source} is {width:,} x {height:,} pixels, an aspect ratio over {max_aspect_ratio:g}:1 "
                         "that a network cannot read once resized; crop it to the part to classify.")


def scaled_size(width: int, height: int, scale: float, min_width: int = 1, min_height: int = 1,
                source: str = "the image", max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) of a ``width`` x ``height`` image scaled by ``scale`` (at least the minimums), refused
    before anything is allocated when the output would exceed ``max_pixels``."""
    out_width = max(min_width, round(width * scale))
    out_height = max(min_height, round(height * scale))
    if out_width * out_height > max_pixels:
        raise ImageError(f"{source} ({width:,} x {height:,} pixels) would be resized to {out_width:,} x "
                         f"{out_height:,} pixels, over the {max_pixels / 1e6:.0f}-megapixel limit; crop it to a "
                         "less elongated shape.")
    return out_width, out_height


def shorter_side_size(width: int, height: int, shorter: int, crop: int = 1,
                      source: str = "the image") -> tuple[int, int]:
    """(width, height) after scaling the shorter side to ``shorter`` pixels (both sides at least ``crop``)."""
    return scaled_size(width, height, shorter / min(width, height), crop, crop, source)


def open_image(source: str | Path | BinaryIO | bytes, channels: int, name: str | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS, max_aspect_ratio: float = MAX_ASPECT_RATIO,
               formats: tuple[str, ...] = IMAGE_FORMATS, upright: bool = False) -> Image.Image:
    """The first frame of an image file (a path, a binary file or bytes) as an 8-bit ``L`` (``channels`` 1)
    or ``RGB`` (3) Pillow image, its header size checked before decoding. ``upright`` applies the EXIF
    orientation (phone photos). Anything unreadable, too large or too elongated raises :class:`ImageError`."""
    if channels not in (1, 3):
        raise ImageError(f"cannot convert an image to {channels} channels; models read 1 (grey) or 3 (RGB).")
    if name is None:
        name = "the image" if isinstance(source, (bytes, bytearray)) else str(getattr(source, "name", source))
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # Pillow warns (and lets decoding go on) between its own limit and twice it; the check below
            # refuses far smaller images with a message that names the size, so the warning is only noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=formats) as opened:
                check_image_size(*opened.size, source=name, max_pixels=max_pixels,
                                 max_aspect_ratio=max_aspect_ratio)
                opened.load()
                image = opened
                if upright:
                    from PIL import ImageOps

                    image = ImageOps.exif_transpose(opened)
                return to_8bit(image, channels)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such image file; check the path (it does not exist).") from None
    except IsADirectoryError:
        raise ImageError(f"{name} is a folder, not an image file.") from None
    except Image.DecompressionBombError:  # Pillow's own check in open(), over twice its 89-megapixel limit
        raise ImageError(f"{name} declares far more than {max_pixels / 1e6:.0f} megapixels (a decompression "
                         "bomb); images are limited to that. Resize it first.") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name} is not a readable image ({type(exc).__name__}: {exc}); re-save it as a PNG, "
                         "JPEG, GIF, WebP, BMP, TIFF or PPM file.") from None


def to_8bit(image: Image.Image, channels: int) -> Image.Image:
    """``image`` in any Pillow mode as 8-bit ``L`` (``channels`` 1) or ``RGB`` (3), each mode's values scaled
    by what they mean (see the module docstring), alpha composited on black."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit PNG and TIFF grey: 0..65535. Pillow's convert clips everything over 255 to white.
        # uint32 holds 65535 * 255 + 32767; int64 would double the memory of a 40-megapixel image.
        values = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        values *= 255
        values += 32767
        values //= 65535
        image = Image.fromarray(values.astype(np.uint8))
    elif mode == "F":
        # Floats in [0, 1] are the usual convention; a file whose values go beyond 1 holds 0..255 levels.
        values = np.array(image, dtype=np.float32)
        with np.errstate(invalid="ignore"):  # NaN pixels (signalling NaNs warn when touched) become 0
            np.nan_to_num(values, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.max() <= 1.0:
            values *= 255.0
        np.clip(np.rint(values, out=values), 0, 255, out=values)
        image = Image.fromarray(values.astype(np.uint8))
    elif mode in _PREMULTIPLIED_MODES:
        image = Image.fromarray(np.ascontiguousarray(np.asarray(image)[..., :-1].squeeze(-1) if mode == "La"
                                                     else np.asarray(image)[..., :3]))
    elif mode in _ALPHA_MODES or "transparency" in image.info:
        image = _composite_on_black(image)
    elif mode not in ("L", "RGB"):
        image = image.convert("RGB")  # 1, P, CMYK, YCbCr, LAB, HSV, RGBX: Pillow's conversions are exact
    return image.convert("L" if channels == 1 else "RGB")


def _composite_on_black(image: Image.Image) -> Image.Image:
    """Colour times alpha, so transparent pixels become black (the background of MNIST-like drawings). Pasting
    through the alpha mask blends in Pillow's C code, with no array the size of the image in between."""
    rgba = image.convert("RGBA")
    composited = Image.new("RGB", rgba.size)
    composited.paste(rgba, mask=rgba.getchannel("A"))
    return composited


# ------------------------------------------------------------------------------------- images as tensors
def read_image(source: str | Path | BinaryIO, channels: int, size: tuple[int, int] | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Read one image file as a (C,H,W) uint8 tensor with ``channels`` channels (1: grey, 3: RGB), resized
    to ``size`` (height, width) when given. Any Pillow mode is converted by what its values mean (16-bit grey
    scaled, not clipped); alpha is composited on black. Sizes are checked before decoding (see
    :mod:`cnnkit.data.image_io`): an image over ``max_pixels``, or too elongated, is an ImageError."""
    name = str(getattr(source, "name", source if isinstance(source, (str, Path)) else "the image"))
    if size is not None:
        check_image_size(size[1], size[0], f"the size to resize {name} to", max_pixels, max_aspect_ratio=math.inf)
    image = open_image(source, channels, name, max_pixels)
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    arr = np.array(image)  # a writable copy, so torch shares it instead of copying again
    del image
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """An RGB image as floats in [0, 1], (3, H, W); ``size`` scales it so its longer side is ``size`` pixels."""
    image = read_image(str(path), 3).float().div_(255)  # str: a Path would be reported by its base name only
    return resize_longer_side(image, size) if size else image


def resize_longer_side(image: torch.Tensor, size: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    target = (max(1, round(h * scale)), max(1, round(w * scale)))
    if target == (h, w):
        return image
    batch = image[None] if image.ndim == 3 else image
    out = F.interpolate(batch, size=target, mode="bilinear", align_corners=False, antialias=scale < 1)
    return (out[0] if image.ndim == 3 else out).clamp(0, 1)


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    try:
        Image.fromarray(array).save(path)
    except (KeyError, ValueError) as exc:  # Pillow: unknown extension
        raise ImageError(f"cannot write {path} ({exc}); use a .png or .jpg file name.") from None
    return path
