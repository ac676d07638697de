"""A range coder in its asymmetric-numeral-system form (rANS; Duda 2013, the byte-wise variant of Giesen's
ryg_rans), with integer frequency tables, in pure Python.

Every symbol is coded with its integer frequency ``freq`` and cumulative start ``start`` out of
``TOTAL = 2**PRECISION``; it then costs log2(TOTAL / freq) bits plus a few bytes per stream, so a table quantised
from a model's probabilities codes at the model's cross-entropy. The state ``x`` stays in [L, 256 L): the encoder
sheds low bytes before a symbol would push it past the top, the decoder pulls bytes in when it falls below L.

rANS is last-in, first-out: :func:`encode` takes the symbols in the order the decoder will read them and codes
them backwards. A decoder that ends anywhere but in the encoder's initial state, or with bytes left over, has
read a corrupt stream; :meth:`RansDecoder.finish` checks both.

Pure Python runs at about a million symbols every few seconds, ample for the latents of a learned codec (a
256x256 image at 16x downsampling has 256 positions per channel). Python integers never overflow, so the
arithmetic below is exactly the 32-bit coder's.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from ..errors import BitstreamError

PRECISION = 16
TOTAL = 1 << PRECISION
STATE_LOW = 1 << 23  # L; the state lives in [L, 256 L), which fits 32 bits
_STATE_HIGH = STATE_LOW << 8
_RENORM = (STATE_LOW >> PRECISION) << 8


def encode(starts: Sequence[int], freqs: Sequence[int]) -> bytes:
    """The rANS stream of symbols given by their cumulative starts and frequencies, in decoding order."""
    state = STATE_LOW
    out = bytearray()
    for start, freq in zip(reversed(starts), reversed(freqs)):
        limit = _RENORM * freq
        while state >= limit:
            out.append(state & 0xFF)
            state >>= 8
        state = (state // freq << PRECISION) + state % freq + start
    out += state.to_bytes(4, "little")
    out.reverse()  # the decoder reads the last byte shed first
    return bytes(out)


def uniform_symbol(value: int, bits: int) -> tuple[int, int]:
    """(start, freq) of ``value`` under a uniform distribution over 2**bits values (bits <= PRECISION)."""
    shift = PRECISION - bits
    return value << shift, 1 << shift


class RansDecoder:
    def __init__(self, data: bytes):
        if len(data) < 4:
            raise BitstreamError(f"the coded data is {len(data)} bytes, shorter than the coder's 4-byte state")
        self.data, self.position = data, 4
        self.state = int.from_bytes(data[:4], "big")
        if not STATE_LOW <= self.state < _STATE_HIGH:
            raise BitstreamError("the coded data does not start with a valid coder state; the file is corrupt")

    def _advance(self, start: int, freq: int, slot: int) -> None:
        state = freq * (self.state >> PRECISION) + slot - start
        data, position = self.data, self.position
        while state < STATE_LOW:
            if position >= len(data):
                raise BitstreamError("the coded data ends before the last symbol; the file is truncated or corrupt")
            state = (state << 8) | data[position]
            position += 1
        self.state, self.position = state, position

    def decode(self, cdf: Sequence[int]) -> int:
        """The next symbol's index in a table of cumulative frequencies (cdf[0] = 0, cdf[-1] = TOTAL)."""
        slot = self.state & (TOTAL - 1)
        symbol = bisect_right(cdf, slot) - 1
        self._advance(cdf[symbol], cdf[symbol + 1] - cdf[symbol], slot)
        return symbol

    def decode_uniform(self, bits: int) -> int:
        slot = self.state & (TOTAL - 1)
        value = slot >> (PRECISION - bits)
        start, freq = uniform_symbol(value, bits)
        self._advance(start, freq, slot)
        return value

    def finish(self) -> None:
        """Raise unless the stream was consumed exactly and the state is back where the encoder began."""
        if self.position != len(self.data) or self.state != STATE_LOW:
            left = len(self.data) - self.position
            raise BitstreamError(f"the coded data does not end where its last symbol does ({left} bytes left over "
                                 "or a wrong final state); the file is corrupt")
