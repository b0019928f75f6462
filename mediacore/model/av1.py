"""AV1 helpers: av1C records, the sequence header's picture size, codec strings, OBUs.

An AV1 track goes out through fragmented MP4 alone (an `av01` sample entry carrying the
record as `av1C`, AV1 Codec ISO Media File Format Binding v1.2.0). Samples there are
temporal units in the low-overhead format without temporal delimiter OBUs (2.4); those are
removed on ingest. The codec string is the binding's short form
`av01.<profile>.<level><tier>.<bit depth>`, e.g. `av01.0.04M.08`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediacore.model.h264 import H264Error, _BitReader

OBU_SEQUENCE_HEADER = 1
OBU_TEMPORAL_DELIMITER = 2
OBU_FRAME_HEADER = 3
OBU_FRAME = 6
KEY_FRAME = 0
AV1C_HEADER = 4


class Av1Error(ValueError):
    """Malformed AV1 configuration or temporal unit."""


@dataclass(frozen=True, slots=True)
class Av1Config:
    profile: int
    level: int  # seq_level_idx_0
    tier: int
    bit_depth: int
    monochrome: bool
    config_obus: bytes
    width: int = 0
    height: int = 0
    reduced_still_picture_header: bool = False

    @property
    def codec_string(self) -> str:
        return f"av01.{self.profile}.{self.level:02d}{'H' if self.tier else 'M'}.{self.bit_depth:02d}"


@dataclass(frozen=True, slots=True)
class Obu:
    type: int
    start: int  # offset of the OBU header in the temporal unit
    end: int  # offset past its payload
    payload: int  # offset of its payload


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise Av1Error("leb128 size truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise Av1Error("leb128 size longer than 8 bytes")


def iter_obus(data: bytes) -> list[Obu]:
    """The OBUs of a temporal unit (or of configOBUs), every size checked against the data.
    An OBU without a size field runs to the end (only the last may)."""
    out: list[Obu] = []
    pos = 0
    end = len(data)
    while pos < end:
        start = pos
        header = data[pos]
        if header & 0x80:
            raise Av1Error("OBU forbidden bit set")
        pos += 2 if header & 0x04 else 1
        if pos > end:
            raise Av1Error("OBU extension header truncated")
        if header & 0x02:
            size, pos = _leb128(data, pos)
            if pos + size > end:
                raise Av1Error(f"OBU declares {size} bytes, {end - pos} remain")
        else:
            size = end - pos
        out.append(Obu((header >> 3) & 0x0F, start, pos + size, pos))
        pos += size
    return out


def _uvlc(r: _BitReader) -> int:
    zeros = 0
    while not r.bit():
        zeros += 1
        if zeros >= 32:
            raise Av1Error("uvlc longer than 32 bits")
    return (1 << zeros) - 1 + r.bits(zeros)


def _sequence_header(payload: bytes) -> tuple[int, int, bool]:
    """(max frame width, max frame height, reduced_still_picture_header) of a sequence header
    OBU's payload (AV1 5.5)."""
    r = _BitReader(payload)
    r.bits(3)  # seq_profile
    r.bit()  # still_picture
    reduced = bool(r.bit())
    if reduced:
        r.bits(5)
    else:
        decoder_model_info = False
        buffer_delay_length = 0
        if r.bit():  # timing_info_present_flag
            r.bits(64)
            if r.bit():  # equal_picture_interval
                _uvlc(r)
            decoder_model_info = bool(r.bit())
            if decoder_model_info:
                buffer_delay_length = r.bits(5) + 1
                r.bits(32 + 5 + 5)
        initial_display_delay = bool(r.bit())
        for _ in range(r.bits(5) + 1):  # operating points
            r.bits(12)
            if r.bits(5) > 7:
                r.bit()
            if decoder_model_info and r.bit():
                r.bits(2 * buffer_delay_length + 1)
            if initial_display_delay and r.bit():
                r.bits(4)
    width_bits = r.bits(4) + 1
    height_bits = r.bits(4) + 1
    return r.bits(width_bits) + 1, r.bits(height_bits) + 1, reduced


def parse_av1c(record: bytes) -> Av1Config:
    """Parse an AV1CodecConfigurationRecord, and the picture size from the sequence header
    among its configOBUs (0 x 0 when it carries none)."""
    if len(record) < AV1C_HEADER or record[0] != 0x81:
        raise Av1Error(f"av1C record of {len(record)} bytes is not version 1")
    b1, b2 = record[1], record[2]
    profile = b1 >> 5
    high_bitdepth = bool(b2 & 0x40)
    twelve_bit = bool(b2 & 0x20)
    bit_depth = (12 if twelve_bit else 10) if profile == 2 and high_bitdepth else (10 if high_bitdepth else 8)
    obus = bytes(record[AV1C_HEADER:])
    width = height = 0
    reduced = False
    for obu in iter_obus(obus):
        if obu.type == OBU_SEQUENCE_HEADER:
            try:
                width, height, reduced = _sequence_header(obus[obu.payload : obu.end])
            except H264Error as e:
                raise Av1Error(f"sequence header truncated: {e}") from e
            break
    return Av1Config(profile, b1 & 0x1F, b2 >> 7, bit_depth, bool(b2 & 0x10), obus, width, height, reduced)


def is_keyframe(data: bytes, reduced_still_picture_header: bool = False) -> bool | None:
    """Whether the temporal unit starts with a key frame (frame_type KEY_FRAME in its first
    frame header, not a shown existing frame); None if its OBUs do not parse."""
    try:
        obus = iter_obus(data)
    except Av1Error:
        return None
    for obu in obus:
        if obu.type in (OBU_FRAME, OBU_FRAME_HEADER):
            if reduced_still_picture_header:
                return True
            if obu.payload >= obu.end:
                return None
            first = data[obu.payload]
            show_existing_frame = first >> 7
            return not show_existing_frame and (first >> 5) & 0x03 == KEY_FRAME
    return False


def strip_temporal_delimiters(data: bytes) -> bytes:
    """The temporal unit without temporal delimiter OBUs (ISOBMFF samples carry none)."""
    obus = iter_obus(data)
    if not any(o.type == OBU_TEMPORAL_DELIMITER for o in obus):
        return data
    return b"".join(data[o.start : o.end] for o in obus if o.type != OBU_TEMPORAL_DELIMITER)
