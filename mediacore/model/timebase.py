"""Integer-only wrap-around arithmetic and timebase rescaling.

Every wrapping clock on the wire (RTMP 32-bit milliseconds, RTP 32-bit ticks and 16-bit
sequence numbers) is unwrapped here to a 64-bit count before anything else sees it, so no
other module ever compares wrapped values.
"""

from __future__ import annotations


class Unwrapper:
    """Extends an n-bit counter to an unbounded integer.

    A step is read as the shortest signed distance modulo 2**bits, so a counter that runs a
    little backwards (interleaved audio/video, reordered packets) is not mistaken for a wrap.
    """

    __slots__ = ("_bits", "_modulus", "_half", "_last")

    def __init__(self, bits: int) -> None:
        self._bits = bits
        self._modulus = 1 << bits
        self._half = 1 << (bits - 1)
        self._last: int | None = None

    def reset(self) -> None:
        self._last = None

    @property
    def last(self) -> int | None:
        return self._last

    def unwrap(self, value: int) -> int:
        value &= self._modulus - 1
        if self._last is None:
            self._last = value
            return value
        delta = (value - self._last) & (self._modulus - 1)
        if delta >= self._half:
            delta -= self._modulus
        self._last += delta
        return self._last


def seq_distance(a: int, b: int, bits: int = 16) -> int:
    """Signed distance from a to b on an n-bit circle (positive when b is after a)."""
    modulus = 1 << bits
    d = (b - a) & (modulus - 1)
    return d - modulus if d >= modulus >> 1 else d


def rescale(value: int, from_den: int, to_den: int, from_num: int = 1, to_num: int = 1) -> int:
    """value * (from_num/from_den) expressed in units of (to_num/to_den), rounded half up."""
    num = value * from_num * to_den
    den = from_den * to_num
    return (2 * num + den) // (2 * den)


def round_half_up(x: float) -> int:
    """Round the way HLS means it (T2): 2.5 -> 3, never Python's banker's rounding."""
    import math

    return math.floor(x + 0.5)
