"""Untrusted image bytes in, model-ready pictures out; and arrays back out as PNG data URLs for the pages.

Uploads are checked before Pillow decodes a single pixel: the declared type must be an image type, the real
format (read from the file's header) must be one of a few common ones, and the size the header declares must
stay under a pixel budget, so a small file that claims to be 50,000 x 50,000 pixels (a decompression bomb)
is refused instead of allocating gigabytes.
"""

from __future__ import annotations

import base64
import functools
import io

import numpy as np
import torch
from PIL import Image

from ..data.image_io import open_image
from ..errors import ImageError
from .errors import UploadTooLargeError, UnsupportedImageTypeError

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 25_000_000  # a 20-megapixel phone photo fits; a decompression bomb does not
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
ALLOWED_CONTENT_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/x-ms-bmp"}


def readable_size(size: int) -> str:
    return f"{size / 2**20:.3g} MB" if size >= 2**20 else f"{size / 2**10:.3g} KB"


def decode_upload(data: bytes, content_type: str | None, filename: str = "upload",
                  max_bytes: int = MAX_UPLOAD_BYTES, channels: int = 3) -> Image.Image:
    """The first frame of an uploaded image as an RGB (``channels`` 3) or grey (1) Pillow image, upright (EXIF
    orientation applied)."""
    if len(data) > max_bytes:
        raise UploadTooLargeError(f"{filename} is {len(data) / 2**20:.1f} MB; uploads are limited to "
                                  f"{readable_size(max_bytes)}. Use a smaller or more compressed image.")
    if not data:
        raise ImageError(f"{filename} is empty; choose an image file.")
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in ALLOWED_CONTENT_TYPES:
        raise UnsupportedImageTypeError(f"{filename} was sent as {declared or 'no type'!r}; upload a PNG, JPEG, "
                                        "GIF, WebP or BMP image.")
    # The header's size and aspect ratio are checked before a pixel is decoded (cnnkit.data.image_io).
    return open_image(data, channels, filename, MAX_PIXELS, formats=ALLOWED_FORMATS, upright=True)


def drawing_to_input(image: Image.Image, image_shape) -> torch.Tensor:
    """A canvas drawing (light strokes on black) as the (1, C, H, W) uint8 batch of a checkpoint's data.

    Grey checkpoints get MNIST's own normalisation (LeCun et al.): the strokes' bounding box is scaled to fit
    20x20 of the 28x28 frame, keeping the aspect ratio, and placed so that its centre of mass sits in the
    middle. Without this a digit drawn small or off-centre on a big canvas is read badly, because the network
    only ever saw centred digits. Colour checkpoints get the whole canvas resized.
    """
    channels, height, width = (int(v) for v in image_shape)
    if channels == 3:
        resized = image.convert("RGB").resize((width, height), Image.BILINEAR)
        return torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).unsqueeze(0)
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    out = np.zeros((height, width), dtype=np.float32)
    ink = grey > 0.1 * max(float(grey.max()), 1.0)
    if ink.any():
        rows, cols = np.nonzero(ink)
        crop = grey[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        box = max(1, round(min(height, width) * 20 / 28))
        scale = box / max(crop.shape)
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        glyph = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize(size, Image.LANCZOS), dtype=np.float32)
        total = glyph.sum()
        if total > 0:
            cy, cx = (np.indices(glyph.shape) * glyph).reshape(2, -1).sum(1) / total
        else:
            cy, cx = (glyph.shape[0] - 1) / 2, (glyph.shape[1] - 1) / 2
        top = int(np.clip(round((height - 1) / 2 - cy), 0, height - glyph.shape[0]))
        left = int(np.clip(round((width - 1) / 2 - cx), 0, width - glyph.shape[1]))
        out[top:top + glyph.shape[0], left:left + glyph.shape[1]] = glyph
    pixels = torch.from_numpy(np.clip(out, 0, 255).round().astype(np.uint8))
    return pixels.view(1, 1, height, width)


# ------------------------------------------------------------------------------------------------ to the page
def png_data_url(array: np.ndarray) -> str:
    """uint8 (H, W) or (H, W, 3|4) array -> ``data:image/png;base64,...`` for an <img> src."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@functools.lru_cache(maxsize=None)
def colour_table(colormap: str) -> np.ndarray:
    """A matplotlib colour map's (N, 4) RGBA table, read once: building the colour map again for every
    picture (a fresh copy each time) cost a Draw request more than its forward pass."""
    from matplotlib import colormaps

    table = colormaps[colormap]
    table = table(np.arange(table.N))  # integers index the table itself
    table.setflags(write=False)
    return table


def colours_of(values: np.ndarray, colormap: str) -> np.ndarray:
    """``matplotlib.colormaps[colormap](values)``, bit for bit, from the cached table: [0, 1] values (beyond:
    the end colours, matplotlib's default under and over; NaN: transparent black, its default bad colour)."""
    table = colour_table(colormap)
    steps = len(table)
    scaled = np.asarray(values) * steps  # in the values' own precision, as matplotlib scales them
    bad = np.isnan(scaled)
    with np.errstate(invalid="ignore"):
        index = np.clip(np.where(bad, 0, scaled).astype(int), 0, steps - 1)
    rgba = table[index]
    rgba[bad] = 0.0
    return rgba


def colourise(values: np.ndarray, colormap: str = "viridis") -> np.ndarray:
    """[0, 1] values (NaN: tile padding) -> RGBA uint8, padding transparent so the page shows through."""
    rgba = colours_of(np.nan_to_num(values, nan=0.0), colormap)
    rgba[..., 3] = np.where(np.isnan(values), 0.0, 1.0)
    return (rgba * 255).round().astype(np.uint8)


def grey_or_colour(values: np.ndarray) -> np.ndarray:
    """A tile from cnnkit.viz.plots.tile ([0, 1], NaN padding) -> uint8 grey or RGB(A) pixels."""
    if values.ndim == 2:
        grey = (np.nan_to_num(values, nan=0.0) * 255).round().astype(np.uint8)
        alpha = np.where(np.isnan(values), 0, 255).astype(np.uint8)
        return np.stack([grey, grey, grey, alpha], axis=-1)
    return (np.clip(values, 0, 1) * 255).round().astype(np.uint8)


def overlay_heatmap(image: Image.Image, heatmap: torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """Grad-CAM drawn over the photo: the 'jet' colours where the class evidence is, the photo elsewhere."""
    photo = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    heat = heatmap.detach().float().cpu().numpy()
    colours = colours_of(heat, "jet")[..., :3]
    weight = alpha * heat[..., None] ** 0.5  # weak evidence stays see-through
    blended = photo * (1 - weight) + colours * weight
    return (np.clip(blended, 0, 1) * 255).round().astype(np.uint8)
