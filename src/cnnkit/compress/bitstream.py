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

Version 4 is the file of the scale hyperprior (``compress_hyperprior``): version 2's fields (the latent being y,
at 1/16 of the image padded to a multiple of 64), then

    28      1      model field: 1 = scale hyperprior (a number this cnnkit does not know is refused)
    29      4      side-information bytes S (a multiple of 4)
    33      4      CRC-32 of bytes 0-32 and the payload
    37      ...    payload: S bytes coding z (the factorized tables, as version 2 codes y), then y

where y's elements are coded table by table: each element's table is the one of its predicted scale
(``hyperprior.gaussian_tables``; the decoder computes the scales from z first, in float64 on the CPU as the
encoder did: :meth:`ScaleHyperpriorCompressor.scale_indexes`), and within a table in raster order, with the same
escapes. Version 3 is the same file with the scales computed in float32 on the model's device, which another
device, thread count or memory layout can move across a table boundary; it is still read, that way. The
fingerprint covers z's tables and the Gaussian tables. Factorized-prior files are still written as version 2,
byte for byte as before; a file of one codec given to a checkpoint of the other is refused with a message
naming both.

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
from .hyperprior import HYPER_DOWNSAMPLING, gaussian_tables
from .model import DOWNSAMPLING, FactorizedPriorCompressor, pad_to_multiple

MAGIC = b"CNKC"
VERSION = 2  # a factorized-prior file
HYPERPRIOR_VERSION = 4  # version 2's fields, a model field and the side information's length
FLOAT32_SCALES_VERSION = 3  # version 4 with the scales in float32 on the model's device: read, no longer written
VERSIONS = (VERSION, FLOAT32_SCALES_VERSION, HYPERPRIOR_VERSION)
_FIELDS = struct.Struct(">4sBBHHHHHII")  # everything before the CRC
_FIELDS_V3 = struct.Struct(">4sBBHHHHHIIBI")
_CRC = struct.Struct(">I")
HEADER_BYTES = _FIELDS.size + _CRC.size
HEADER_BYTES_V3 = _FIELDS_V3.size + _CRC.size
# The model field of a hyperprior file (versions 3 and 4): which codec wrote it (another kind's checkpoint
# refuses it).
MODEL_KINDS = {1: "hyperprior"}
MODEL_NAMES = {"factorized": "compress_factorized", "hyperprior": "compress_hyperprior"}
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
    model: str = "factorized"  # the codec that wrote the file: "factorized" (version 2) or "hyperprior"
    side_bytes: int = 0  # a hyperprior's coded side information z, the first bytes of the payload
    version: int = VERSION

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.latent_channels, self.latent_height, self.latent_width

    @property
    def header_bytes(self) -> int:
        return HEADER_BYTES if self.model == "factorized" else HEADER_BYTES_V3


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


def _encode_groups(groups: list[np.ndarray], tables: CodingTables) -> bytes:
    """One ANS stack holding ``groups[k]`` (int64 arrays) coded with table k: every group's symbols, in order,
    then the escaped values' 4-bit groups (see the module docstring)."""
    symbols, escaped = [], []
    for values, cdf, offset in zip(groups, tables.cdfs, tables.offsets):
        escape = len(cdf) - 2
        inside = (values >= offset) & (values < offset + escape)
        symbols.append(np.where(inside, values - offset, escape).astype(np.int32))
        escaped.append(values[~inside])
    coder = constriction.stream.stack.AnsCoder()
    counts, nibbles = _escape_groups(np.concatenate(escaped))
    coder.encode_reverse(nibbles, _GROUP)  # a stack: what is decoded last goes in first
    coder.encode_reverse(counts, _GROUP)
    models = _channel_models(tables)
    for k in reversed(range(len(groups))):
        if len(symbols[k]):
            coder.encode_reverse(symbols[k], models[k])
    return coder.get_compressed().astype("<u4").tobytes()


def _decode_groups(payload: bytes, sizes: list[int], tables: CodingTables) -> list[np.ndarray]:
    """The groups of ``sizes[k]`` values each that :func:`_encode_groups` coded in ``payload``, as float64."""
    if len(payload) % 4:
        raise BitstreamError(f"the coded data is {len(payload)} bytes, not a whole number of the coder's 4-byte "
                             "words; the file is truncated or corrupt")
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    except ValueError as exc:  # constriction: "ANS compressed data never ends in a zero word"
        raise BitstreamError(f"the coded data is not a valid coder state ({exc}); the file is corrupt") from None
    values = np.empty(sum(sizes), dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    escapes = []
    for k, model in enumerate(_channel_models(tables)):
        if not sizes[k]:
            continue
        symbols = coder.decode(model, sizes[k])
        values[starts[k]:starts[k + 1]] = symbols + tables.offsets[k]
        escapes.append(np.flatnonzero(symbols == len(tables.cdfs[k]) - 2) + starts[k])
    escapes = np.concatenate(escapes) if escapes else np.zeros(0, dtype=np.int64)
    counts = coder.decode(_GROUP, len(escapes)).astype(np.int64) + 1
    values[escapes] = _escaped_values(counts, coder.decode(_GROUP, int(counts.sum())))
    if not coder.is_empty():
        raise BitstreamError("the coded data does not end where its last symbol does (data left over or a wrong "
                             "final state); the file is corrupt")
    return [values[starts[k]:starts[k + 1]] for k in range(len(sizes))]


def _check_integers(latent: torch.Tensor) -> np.ndarray:
    values = latent.detach().cpu()
    if not torch.isfinite(values).all() or values.abs().max() >= _MAX_MAGNITUDE or (values != values.round()).any():
        raise ValueError("the latent must hold finite integers")
    return values.to(torch.int64).numpy()


def encode_latent(latent: torch.Tensor, tables: CodingTables) -> bytes:
    """Entropy-code an integer latent (M, h, w) with one frequency table per channel."""
    if latent.ndim != 3 or len(latent) != len(tables.cdfs):
        raise ValueError(f"expected a latent of shape ({len(tables.cdfs)}, h, w), got {tuple(latent.shape)}")
    return _encode_groups(list(_check_integers(latent).reshape(len(latent), -1)), tables)


def decode_latent(payload: bytes, shape: tuple[int, int, int], tables: CodingTables) -> torch.Tensor:
    """The integer latent of ``shape`` (M, h, w) coded in ``payload``, as float32."""
    channels, height, width = shape
    groups = _decode_groups(payload, [height * width] * channels, tables)
    return torch.from_numpy(np.stack(groups) if groups else np.zeros((0, height * width))).reshape(shape).float()


def encode_conditional(latent: torch.Tensor, indexes: torch.Tensor, tables: CodingTables) -> bytes:
    """Entropy-code an integer latent whose every element has its own table, ``indexes`` (same shape): the
    elements are coded table by table, each table's in raster order (a hyperprior's y, given its scales)."""
    values, indexes = _check_integers(latent).reshape(-1), indexes.cpu().numpy().reshape(-1)
    if values.shape != indexes.shape:
        raise ValueError(f"a latent of {values.size} values with {indexes.size} table indexes")
    return _encode_groups([values[indexes == k] for k in range(len(tables.cdfs))], tables)


def decode_conditional(payload: bytes, indexes: torch.Tensor, tables: CodingTables) -> torch.Tensor:
    """The latent :func:`encode_conditional` coded, as float32 of ``indexes``' shape."""
    flat = indexes.cpu().numpy().reshape(-1)
    groups = _decode_groups(payload, np.bincount(flat, minlength=len(tables.cdfs)).tolist(), tables)
    values = np.empty(flat.size, dtype=np.float64)
    for k, group in enumerate(groups):
        values[flat == k] = group
    return torch.from_numpy(values).reshape(indexes.shape).float()


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


def _fingerprint(model: FactorizedPriorCompressor, tables: CodingTables) -> int:
    """What a file records of the model that wrote it: the CRC-32 of its coding tables (with a hyperprior, of
    z's tables and the Gaussian tables of y)."""
    if model.kind == "factorized":
        return tables.fingerprint
    return zlib.crc32(struct.pack("<I", gaussian_tables().fingerprint), tables.fingerprint)


@torch.no_grad()
def compress_image(model: FactorizedPriorCompressor, image: torch.Tensor, tables: CodingTables | None = None) -> bytes:
    """The ``.cnk`` file of one image: (C, H, W) uint8, or floats in [0, 1]. ``tables``: the model's
    ``entropy_model.coding_tables()``, computed once by callers that code many images."""
    model.eval()
    x = _as_batch(model, image)
    padded = pad_to_multiple(x, model.downsampling)
    tables = tables or model.entropy_model.coding_tables()
    size = (x.shape[1], x.shape[2], x.shape[3])
    if model.kind == "factorized":
        latent = model.quantized_latent(padded)[0]
        payload = encode_latent(latent, tables)
        fields = _FIELDS.pack(MAGIC, VERSION, *size, *latent.shape, tables.fingerprint, len(payload))
    else:
        latent, side = (v[0] for v in model.quantized_latents(padded))
        side_payload = encode_latent(side, tables)
        indexes = model.scale_indexes(side[None])[0]
        payload = side_payload + encode_conditional(latent, indexes, gaussian_tables())
        fields = _FIELDS_V3.pack(MAGIC, HYPERPRIOR_VERSION, *size, *latent.shape, _fingerprint(model, tables),
                                 len(payload), 1, len(side_payload))
    return fields + _CRC.pack(zlib.crc32(payload, zlib.crc32(fields))) + payload


def read_header(data: bytes) -> Header:
    """The header of a ``.cnk`` file, after checking its magic, version, length and CRC."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError(f"not a cnnkit compressed image: it starts with {bytes(data[:4])!r}, not {MAGIC!r}")
    version = data[4] if len(data) > 4 else VERSION
    hyperprior = version in (FLOAT32_SCALES_VERSION, HYPERPRIOR_VERSION)
    fields, header_bytes = (_FIELDS_V3, HEADER_BYTES_V3) if hyperprior else (_FIELDS, HEADER_BYTES)
    if len(data) < header_bytes:
        raise BitstreamError(f"the file is truncated: {len(data)} bytes, shorter than the {header_bytes}-byte header")
    magic, version, *values = fields.unpack_from(data)
    if version not in VERSIONS:
        written_by = " (cnnkit's earlier pure-Python range coder)" if version == 1 else ""
        raise BitstreamError(f"format version {version}{written_by} is not supported (this cnnkit reads versions "
                             f"{', '.join(map(str, VERSIONS))}); compress the image again with this version")
    if hyperprior:
        *values, kind, side_bytes = values
        if kind not in MODEL_KINDS:
            raise BitstreamError(f"the file names codec number {kind}, which this cnnkit does not know (it knows "
                                 f"{', '.join(f'{k}: {MODEL_NAMES[v]}' for k, v in MODEL_KINDS.items())}); it was "
                                 "written by a newer cnnkit, or is corrupt")
        header = Header(*values, model=MODEL_KINDS[kind], side_bytes=side_bytes, version=version)
    else:
        header = Header(*values)
    available = len(data) - header_bytes
    if available != header.payload_bytes:
        state = "truncated" if available < header.payload_bytes else "followed by extra bytes"
        raise BitstreamError(f"the file is {state}: its header announces {header.payload_bytes} payload bytes, "
                             f"{available} follow it")
    (crc,) = _CRC.unpack_from(data, fields.size)
    if zlib.crc32(data[header_bytes:], zlib.crc32(data[:fields.size])) != crc:
        raise BitstreamError("the file is corrupt: its CRC-32 checksum does not match its contents")
    if header.height * header.width > MAX_CODED_PIXELS:
        raise BitstreamError(f"the header announces a {header.width}x{header.height} image, more than the "
                             f"{MAX_CODED_PIXELS:,} pixels a .cnk file may hold; the file is corrupt or hostile")
    # y is 1/16 of the image padded to the codec's multiple (16; 64 with a hyperprior's two more halvings).
    multiple = DOWNSAMPLING if header.model == "factorized" else HYPER_DOWNSAMPLING
    expected = tuple(-(-size // multiple) * (multiple // DOWNSAMPLING) for size in (header.height, header.width))
    if min(header.height, header.width, header.channels, header.latent_channels) == 0 or \
            (header.latent_height, header.latent_width) != expected:
        raise BitstreamError(f"inconsistent header: a {header.height}x{header.width} image cannot have a "
                             f"{header.latent_height}x{header.latent_width} latent")
    if header.side_bytes > header.payload_bytes or header.side_bytes % 4:
        raise BitstreamError(f"inconsistent header: {header.side_bytes} bytes of side information in a "
                             f"{header.payload_bytes}-byte payload; the file is corrupt")
    return header


@torch.no_grad()
def decompress_latents(model: FactorizedPriorCompressor, data: bytes, tables: CodingTables | None = None
                       ) -> tuple[Header, torch.Tensor, torch.Tensor | None]:
    """(header, the rounded latent y (M, h, w), a hyperprior's rounded side information z or None) of a
    ``.cnk`` file, after every check."""
    header = read_header(bytes(data))
    if header.model != model.kind:
        raise BitstreamError(f"the file was written by a {MODEL_NAMES[header.model]} codec, but this checkpoint is "
                             f"a {MODEL_NAMES[model.kind]}; decompress it with the checkpoint that compressed it")
    if (header.channels, header.latent_channels) != (model.in_channels, model.latent_channels):
        raise BitstreamError(f"the file holds a {header.channels}-channel image with a {header.latent_channels}-"
                             f"channel latent, but this model codes {model.in_channels}-channel images with "
                             f"{model.latent_channels}; decompress it with the checkpoint that compressed it")
    tables = tables or model.entropy_model.coding_tables()
    if header.fingerprint != _fingerprint(model, tables):
        raise BitstreamError("the file was written by another model (its entropy-model fingerprint differs); "
                             "decompress it with the checkpoint that compressed it")
    payload = bytes(data[header.header_bytes:])
    if header.model == "factorized":
        return header, decode_latent(payload, header.latent_shape, tables), None
    side_shape = (model.hyper_channels, header.latent_height // 4, header.latent_width // 4)
    side = decode_latent(payload[:header.side_bytes], side_shape, tables)
    float64 = header.version != FLOAT32_SCALES_VERSION
    indexes = model.scale_indexes(side[None].to(next(model.parameters()).device), float64=float64)[0]
    return header, decode_conditional(payload[header.side_bytes:], indexes, gaussian_tables()), side


def decompress_latent(model: FactorizedPriorCompressor, data: bytes,
                      tables: CodingTables | None = None) -> tuple[Header, torch.Tensor]:
    """(header, the rounded latent y (M, h, w)) of a ``.cnk`` file, after every check."""
    header, latent, _ = decompress_latents(model, data, tables)
    return header, latent


@torch.no_grad()
def decompress(model: FactorizedPriorCompressor, data: bytes, tables: CodingTables | None = None) -> torch.Tensor:
    """The image (C, H, W) uint8 of a ``.cnk`` file."""
    model.eval()
    header, latent, _ = decompress_latents(model, data, tables)
    reconstruction = model.synthesis(latent[None].to(next(model.parameters()).device))
    image = reconstruction[0, :, :header.height, :header.width].clamp(0, 1)
    return (image * 255).round().to(torch.uint8).cpu()
