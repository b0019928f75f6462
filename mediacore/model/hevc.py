"""HEVC (H.265) helpers: hvcC records, SPS picture size, codec strings, keyframes.

Only what the remuxer needs: an HEVC track goes out through fragmented MP4 alone (an `hvc1`
sample entry carrying the record as `hvcC`), so no Annex B conversion is needed. The codec
string follows ISO/IEC 14496-15 Annex E.3: `hvc1.` profile space letter (none for 0) and
profile_idc, the 32 compatibility flags in reverse bit order in hex, tier (`L`/`H`) and
level_idc, then the six constraint bytes in hex with trailing zero bytes left out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mediacore.model.h264 import H264Error, _BitReader, _unescape

NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
IRAP_FIRST = 16  # BLA_W_LP
IRAP_LAST = 23  # RSV_IRAP_VCL23
HVCC_HEADER = 23


class HevcError(ValueError):
    """Malformed HEVC configuration or access unit."""


@dataclass(frozen=True, slots=True)
class HevcConfig:
    profile_space: int
    tier: int
    profile_idc: int
    compatibility: int  # general_profile_compatibility_flags, 32 bits, flag 0 first (MSB)
    constraints: bytes  # the 6 bytes of general constraint indicator flags
    level: int
    nal_length_size: int
    arrays: tuple[tuple[int, tuple[bytes, ...]], ...]  # (NAL unit type, units)

    def units(self, nal_type: int) -> tuple[bytes, ...]:
        return next((units for t, units in self.arrays if t == nal_type), ())

    @property
    def codec_string(self) -> str:
        space = ("", "A", "B", "C")[self.profile_space]
        reversed_flags = int(f"{self.compatibility:032b}"[::-1], 2)
        constraints = self.constraints.rstrip(b"\x00")
        parts = [
            "hvc1",
            f"{space}{self.profile_idc}",
            f"{reversed_flags:X}",
            f"{'H' if self.tier else 'L'}{self.level}",
        ]
        parts += [f"{b:X}" for b in constraints]
        return ".".join(parts)


def parse_hvcc(record: bytes) -> HevcConfig:
    """Parse an HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1), checking every
    declared length against the record before reading it."""
    if len(record) < HVCC_HEADER or record[0] != 1:
        raise HevcError(f"hvcC record of {len(record)} bytes is not version 1")
    b1 = record[1]
    (compatibility,) = struct.unpack_from(">I", record, 2)
    nal_length_size = (record[21] & 0x03) + 1
    if nal_length_size == 3:
        raise HevcError("hvcC NAL length size 3 is not allowed")
    count = record[22]
    pos = HVCC_HEADER
    arrays: list[tuple[int, tuple[bytes, ...]]] = []
    for _ in range(count):
        if pos + 3 > len(record):
            raise HevcError("hvcC record truncated in an array header")
        nal_type = record[pos] & 0x3F
        (units,) = struct.unpack_from(">H", record, pos + 1)
        pos += 3
        found: list[bytes] = []
        for _ in range(units):
            if pos + 2 > len(record):
                raise HevcError("hvcC record truncated in a NAL unit length")
            (length,) = struct.unpack_from(">H", record, pos)
            pos += 2
            if pos + length > len(record):
                raise HevcError(f"hvcC NAL unit declares {length} bytes past the record")
            found.append(bytes(record[pos : pos + length]))
            pos += length
        arrays.append((nal_type, tuple(found)))
    config = HevcConfig(
        b1 >> 6,
        (b1 >> 5) & 1,
        b1 & 0x1F,
        compatibility,
        bytes(record[6:12]),
        record[12],
        nal_length_size,
        tuple(arrays),
    )
    if not config.units(NAL_SPS):
        raise HevcError("hvcC record has no SPS")
    return config


@dataclass(frozen=True, slots=True)
class HevcSps:
    width: int
    height: int


def parse_sps(nal: bytes) -> HevcSps:
    """Picture size (after the conformance window) from an SPS NAL unit (ITU-T H.265 7.3.2.2)."""
    if len(nal) < 3:
        raise HevcError("SPS NAL unit too short")
    try:
        r = _BitReader(_unescape(nal[2:]))
        r.bits(4)  # sps_video_parameter_set_id
        max_sub_layers_minus1 = r.bits(3)
        r.bit()  # sps_temporal_id_nesting_flag
        r.bits(2 + 1 + 5 + 32 + 48 + 8)  # general profile, tier, flags, level
        flags = [(r.bit(), r.bit()) for _ in range(max_sub_layers_minus1)]
        if max_sub_layers_minus1 > 0:
            r.bits(2 * (8 - max_sub_layers_minus1))
        for profile_present, level_present in flags:
            if profile_present:
                r.bits(88)
            if level_present:
                r.bits(8)
        r.ue()  # sps_seq_parameter_set_id
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise HevcError(f"SPS chroma_format_idc {chroma_format_idc}")
        if chroma_format_idc == 3:
            r.bit()
        width = r.ue()
        height = r.ue()
        if r.bit():  # conformance_window_flag
            left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
            sub_w = 2 if chroma_format_idc in (1, 2) else 1
            sub_h = 2 if chroma_format_idc == 1 else 1
            width -= sub_w * (left + right)
            height -= sub_h * (top + bottom)
    except H264Error as e:
        raise HevcError(f"SPS truncated: {e}") from e
    if width <= 0 or height <= 0 or width > 16384 or height > 16384:
        raise HevcError(f"SPS gives an implausible picture size {width}x{height}")
    return HevcSps(width, height)


def nal_type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


def contains_irap(data: bytes, length_size: int = 4) -> bool | None:
    """Whether the length-prefixed access unit holds an IRAP picture (NAL types 16-23: BLA,
    IDR, CRA), where decoding can start; None if its lengths do not add up."""
    pos = 0
    end = len(data)
    while pos < end:
        if pos + length_size > end:
            return None
        length = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if length < 2 or pos + length > end:
            return None
        if IRAP_FIRST <= (data[pos] >> 1) & 0x3F <= IRAP_LAST:
            return True
        pos += length
    return False
