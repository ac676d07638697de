"""The ``.cnk`` file: a learned codec's image as a real bitstream.

    offset  bytes  field
    0       4      magic b"CNKC"
    4       1      format version (2)
    5       1      image channels (1 grey, 3 RGB)
    6       2      image height            big-endian unsigned
    8       2      image width
    10      2      latent channels M
    12      2      latent height  = ceil(height / 16)
    14      2      latent width   = ceil(width / 16)
    16      4      model fingerprint: CRC-32 of the model's coding tables
    20      4      payload length in bytes (a multiple of 4)
    24      4      CRC-32 of bytes 0-23 and the payload
    28      ...    payload: the rounded latent, entropy-coded

The payload is the compressed data of one ANS stack (``constriction.stream.stack.AnsCoder``, 32-bit words,
little-endian). Its symbols, in decoding order: the latent channel by channel, row by row, each value as a
symbol of its channel's frequency table (:meth:`FactorizedEntropyModel.coding_tables`); then, for the values
outside their table (coded as the table's escape symbol), their zigzag-mapped magnitudes in 4-bit groups: every
escaped value's count of groups first, then all the groups, uniformly distributed. Any integer round-trips.

Version 1 files (cnnkit's own pure-Python rANS coder, with the escapes interleaved) are refused with a message
saying so: compress the image again.

Decoding checks everything before it trusts anything: the magic and version, header fields that agree with
each other and with the model, the length, the CRC-32 (a flipped bit or a cut file is caught here), the model
fingerprint (a file decoded with another checkpoint would give a wrong image), and that the coder ends exactly
at the end of the payload. Each failure raises :class:`BitstreamError` saying which.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import constriction
import numpy as np
import torch

from ..errors import BitstreamError, ImageError
from .entropy import CodingTables
from .model import DOWNSAMPLING, FactorizedPriorCompressor, pad_to_multiple

MAGIC = b"CNKC"
VERSION = 2
_FIELDS = struct.Struct(">4sBBHHHHHII")  # everything before the CRC
_CRC = struct.Struct(">I")
HEADER_BYTES = _FIELDS.size + _CRC.size
_NIBBLE = 4
_GROUP = constriction.stream.model.Uniform(1 << _NIBBLE)
_MAX_MAGNITUDE = 1 << 60  # zigzag codes below 2**61: at most 16 groups, so a group's count (minus 1) fits a group
# The largest image a file may hold, checked in the header before any decoding: synthesis holds 128 channels at
# half the image's size.
MAX_CODED_PIXELS = 2048 * 2048


@dataclasses.dataclass(frozen=True)
class Header:
    channels: int
    height: int
    width: int
    latent_channels: int
    latent_height: int
    latent_width: int
    fingerprint: int
    payload_bytes: int

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.latent_channels, self.latent_height, self.latent_width


def _channel_models(tables: CodingTables) -> list:
    """One categorical model per channel, given the integer frequencies (exact in float64): the encoder and the
    decoder hand the coder the same numbers, which it quantises to its own precision the same way."""
    return [constriction.stream.model.Categorical(np.diff(cdf).astype(np.float64), perfect=False)
            for cdf in tables.cdfs]


def _group_positions(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For escapes of ``counts`` 4-bit groups each, most significant first: every group's escape and its shift."""
    owner = np.repeat(np.arange(len(counts)), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    rank = np.arange(len(owner)) - first[owner]
    return owner, (_NIBBLE * (counts[owner] - 1 - rank)).astype(np.uint64)


def _escape_groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count of groups - 1 per value, all the groups) of escaped integers' zigzag codes."""
    codes = np.where(values >= 0, 2 * values, -2 * values - 1).astype(np.uint64)
    counts = 1 + sum((codes >> np.uint64(_NIBBLE * k) > 0).astype(np.int64) for k in range(1, 16))
    owner, shifts = _group_positions(counts)
    return (counts - 1).astype(np.int32), ((codes[owner] >> shifts) & np.uint64(0xF)).astype(np.int32)


def _escaped_values(counts: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The integers (as float64) whose zigzag codes are ``groups``, ``counts`` groups each."""
    owner, shifts = _group_positions(counts)
    codes = np.zeros(len(counts), dtype=np.uint64)
    np.add.at(codes, owner, groups.astype(np.uint64) << shifts)  # disjoint bits: the sum is the code
    magnitude = (codes >> np.uint64(1)).astype(np.float64) + (codes & np.uint64(1))
    return np.where(codes & np.uint64(1), -magnitude, magnitude)


def encode_latent(latent: torch.Tensor, tables: CodingTables) -> bytes:
    """Entropy-code an integer latent (M, h, w) with one frequency table per channel."""
    values = latent.detach().cpu()
    if values.ndim != 3 or len(values) != len(tables.cdfs):
        raise ValueError(f"expected a latent of shape ({len(tables.cdfs)}, h, w), got {tuple(values.shape)}")
    if not torch.isfinite(values).all() or values.abs().max() >= _MAX_MAGNITUDE or (values != values.round()).any():
        raise ValueError("the latent must hold finite integers")
    values = values.to(torch.int64).flatten(1).numpy()
    symbols, escaped = [], []
    for channel, cdf in enumerate(tables.cdfs):
        escape, offset = len(cdf) - 2, tables.offsets[channel]
        inside = (values[channel] >= offset) & (values[channel] < offset + escape)
        symbols.append(np.where(inside, values[channel] - offset, escape).astype(np.int32))
        escaped.append(values[channel][~inside])
    coder = constriction.stream.stack.AnsCoder()
    counts, groups = _escape_groups(np.concatenate(escaped))
    coder.encode_reverse(groups, _GROUP)  # a stack: what is decoded last goes in first
    coder.encode_reverse(counts, _GROUP)
    for channel_symbols, model in zip(reversed(symbols), reversed(_channel_models(tables))):
        coder.encode_reverse(channel_symbols, model)
    return coder.get_compressed().astype("<u4").tobytes()


def decode_latent(payload: bytes, shape: tuple[int, int, int], tables: CodingTables) -> torch.Tensor:
    """The integer latent of ``shape`` (M, h, w) coded in ``payload``, as float32."""
    channels, height, width = shape
    if len(payload) % 4:
        raise BitstreamError(f"the coded data is {len(payload)} bytes, not a whole number of the coder's 4-byte "
                             "words; the file is truncated or corrupt")
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    except ValueError as exc:  # constriction: "ANS compressed data never ends in a zero word"
        raise BitstreamError(f"the coded data is not a valid coder state ({exc}); the file is corrupt") from None
    values = np.empty((channels, height * width), dtype=np.float64)
    escapes = []
    for channel, model in enumerate(_channel_models(tables)):
        symbols = coder.decode(model, height * width)
        escape = symbols == len(tables.cdfs[channel]) - 2
        values[channel] = symbols + tables.offsets[channel]
        escapes.append(np.flatnonzero(escape) + channel * height * width)
    escapes = np.concatenate(escapes)
    counts = coder.decode(_GROUP, len(escapes)).astype(np.int64) + 1
    values.reshape(-1)[escapes] = _escaped_values(counts, coder.decode(_GROUP, int(counts.sum())))
    if not coder.is_empty():
        raise BitstreamError("the coded data does not end where its last symbol does (data left over or a wrong "
                             "final state); the file is corrupt")
    return torch.from_numpy(values).reshape(shape).float()


def _as_batch(model: FactorizedPriorCompressor, image: torch.Tensor) -> torch.Tensor:
    """A (C, H, W) uint8 image, or floats in [0, 1], as a (1, C, H, W) float batch on the model's device."""
    if not torch.is_tensor(image) or image.ndim != 3:
        raise ImageError(f"expected one image as a (channels, height, width) tensor, got "
                         f"{tuple(image.shape) if torch.is_tensor(image) else type(image).__name__}")
    if image.shape[0] != model.in_channels:
        raise ImageError(f"the image has {image.shape[0]} channel(s) but this model compresses "
                         f"{model.in_channels}-channel images; convert it (1: grey, 3: RGB)")
    if not (1 <= min(image.shape[1:]) and image.shape[1] * image.shape[2] <= MAX_CODED_PIXELS):
        raise ImageError(f"image size {image.shape[2]}x{image.shape[1]} is outside 1..{MAX_CODED_PIXELS:,} pixels; "
                         "crop or resize it first")
    if image.dtype == torch.uint8:
        x = image.float() / 255
    elif image.is_floating_point():
        x = image.float()
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ImageError("a float image must hold values in [0, 1]")
    else:
        raise ImageError(f"expected a uint8 or float image, got {image.dtype}")
    return x[None].to(next(model.parameters()).device)


@torch.no_grad()
def compress_image(model: FactorizedPriorCompressor, image: torch.Tensor, tables: CodingTables | None = None) -> bytes:
    """The ``.cnk`` file of one image: (C, H, W) uint8, or floats in [0, 1]. ``tables``: the model's
    ``entropy_model.coding_tables()``, computed once by callers that code many images."""
    model.eval()
    x = _as_batch(model, image)
    latent = model.quantized_latent(pad_to_multiple(x))[0]
    tables = tables or model.entropy_model.coding_tables()
    payload = encode_latent(latent, tables)
    fields = _FIELDS.pack(MAGIC, VERSION, x.shape[1], x.shape[2], x.shape[3], *latent.shape, tables.fingerprint,
                          len(payload))
    return fields + _CRC.pack(zlib.crc32(payload, zlib.crc32(fields))) + payload


def read_header(data: bytes) -> Header:
    """The header of a ``.cnk`` file, after checking its magic, version, length and CRC."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError(f"not a cnnkit compressed image: it starts with {bytes(data[:4])!r}, not {MAGIC!r}")
    if len(data) < HEADER_BYTES:
        raise BitstreamError(f"the file is truncated: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, version, *fields = _FIELDS.unpack_from(data)
    if version != VERSION:
        written_by = " (cnnkit's earlier pure-Python range coder)" if version == 1 else ""
        raise BitstreamError(f"format version {version}{written_by} is not supported (this cnnkit reads version "
                             f"{VERSION}); compress the image again with this version")
    header = Header(*fields)
    available = len(data) - HEADER_BYTES
    if available != header.payload_bytes:
        state = "truncated" if available < header.payload_bytes else "followed by extra bytes"
        raise BitstreamError(f"the file is {state}: its header announces {header.payload_bytes} payload bytes, "
                             f"{available} follow it")
    (crc,) = _CRC.unpack_from(data, _FIELDS.size)
    if zlib.crc32(data[HEADER_BYTES:], zlib.crc32(data[:_FIELDS.size])) != crc:
        raise BitstreamError("the file is corrupt: its CRC-32 checksum does not match its contents")
    if header.height * header.width > MAX_CODED_PIXELS:
        raise BitstreamError(f"the header announces a {header.width}x{header.height} image, more than the "
                             f"{MAX_CODED_PIXELS:,} pixels a .cnk file may hold; the file is corrupt or hostile")
    expected = (-(-header.height // DOWNSAMPLING), -(-header.width // DOWNSAMPLING))
    if min(header.height, header.width, header.channels, header.latent_channels) == 0 or \
            (header.latent_height, header.latent_width) != expected:
        raise BitstreamError(f"inconsistent header: a {header.height}x{header.width} image cannot have a "
                             f"{header.latent_height}x{header.latent_width} latent")
    return header


@torch.no_grad()
def decompress_latent(model: FactorizedPriorCompressor, data: bytes,
                      tables: CodingTables | None = None) -> tuple[Header, torch.Tensor]:
    """(header, the rounded latent (M, h, w)) of a ``.cnk`` file, after every check."""
    header = read_header(bytes(data))
    if (header.channels, header.latent_channels) != (model.in_channels, model.latent_channels):
        raise BitstreamError(f"the file holds a {header.channels}-channel image with a {header.latent_channels}-"
                             f"channel latent, but this model codes {model.in_channels}-channel images with "
                             f"{model.latent_channels}; decompress it with the checkpoint that compressed it")
    tables = tables or model.entropy_model.coding_tables()
    if header.fingerprint != tables.fingerprint:
        raise BitstreamError("the file was written by another model (its entropy-model fingerprint differs); "
                             "decompress it with the checkpoint that compressed it")
    latent = decode_latent(bytes(data[HEADER_BYTES:]), header.latent_shape, tables)
    return header, latent


@torch.no_grad()
def decompress(model: FactorizedPriorCompressor, data: bytes, tables: CodingTables | None = None) -> torch.Tensor:
    """The image (C, H, W) uint8 of a ``.cnk`` file."""
    model.eval()
    header, latent = decompress_latent(model, data, tables)
    reconstruction = model.synthesis(latent[None].to(next(model.parameters()).device))
    image = reconstruction[0, :, :header.height, :header.width].clamp(0, 1)
    return (image * 255).round().to(torch.uint8).cpu()
