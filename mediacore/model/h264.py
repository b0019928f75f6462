"""H.264 bitstream helpers: avcC records, SPS fields, AVCC <-> Annex B.

Only what the remuxer needs: stream parameters for playlists and the API, and the Annex B
form (with parameter sets ahead of every IDR and an access unit delimiter) that MPEG-TS
carries.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
START_CODE = b"\x00\x00\x00\x01"
AUD_NAL = b"\x09\xf0"


class H264Error(ValueError):
    """Malformed H.264 configuration or access unit."""


@dataclass(frozen=True, slots=True)
class AvcConfig:
    profile: int
    compatibility: int
    level: int
    nal_length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]

    @property
    def codec_string(self) -> str:
        return f"avc1.{self.profile:02x}{self.compatibility:02x}{self.level:02x}"


def parse_avcc(record: bytes) -> AvcConfig:
    """Parse an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1)."""
    if len(record) < 7 or record[0] != 1:
        raise H264Error(f"avcC record of {len(record)} bytes is not version 1")
    nal_length_size = (record[4] & 0x03) + 1
    if nal_length_size == 3:
        raise H264Error("avcC NAL length size 3 is not allowed")
    pos = 5
    sets: list[list[bytes]] = [[], []]
    for which in (0, 1):
        if pos >= len(record):
            raise H264Error("avcC record truncated before parameter set count")
        count = record[pos] & (0x1F if which == 0 else 0xFF)
        pos += 1
        for _ in range(count):
            if pos + 2 > len(record):
                raise H264Error("avcC record truncated in parameter set length")
            (length,) = struct.unpack_from(">H", record, pos)
            pos += 2
            if pos + length > len(record):
                raise H264Error(f"avcC parameter set declares {length} bytes past the record")
            sets[which].append(bytes(record[pos : pos + length]))
            pos += length
    if not sets[0]:
        raise H264Error("avcC record has no SPS")
    return AvcConfig(record[1], record[2], record[3], nal_length_size, tuple(sets[0]), tuple(sets[1]))


def build_avcc(sps: bytes, pps: bytes) -> bytes:
    """An avcC record holding one SPS and one PPS (for sources that send them in-band)."""
    return (
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1])
        + struct.pack(">H", len(sps))
        + sps
        + b"\x01"
        + struct.pack(">H", len(pps))
        + pps
    )


def iter_nalus(data: bytes, length_size: int = 4) -> list[bytes]:
    """Split a length-prefixed access unit into NAL units, checking every declared length."""
    out: list[bytes] = []
    pos = 0
    end = len(data)
    mv = memoryview(data)
    while pos < end:
        if pos + length_size > end:
            raise H264Error("NAL length prefix truncated")
        length = int.from_bytes(mv[pos : pos + length_size], "big")
        pos += length_size
        if length == 0 or pos + length > end:
            raise H264Error(f"NAL unit declares {length} bytes, {end - pos} remain")
        out.append(bytes(mv[pos : pos + length]))
        pos += length
    return out


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (3- or 4-byte start codes, as encoders write
    it). Zero bytes before a start code are dropped (trailing_zero_8bits; a NAL unit never
    ends in one, cabac_zero_words being optional padding)."""
    pieces = data.split(b"\x00\x00\x01")
    return [n for n in (p.rstrip(b"\x00") for p in pieces[1:]) if n]


def avcc_to_annexb(data: bytes, config: AvcConfig, keyframe: bool) -> bytes:
    """Annex B access unit for MPEG-TS: AUD first, SPS/PPS before every IDR (HLS E3/E5
    need each segment decodable on its own), in-band AUDs and parameter sets replaced."""
    parts = [START_CODE, AUD_NAL]
    nalus = iter_nalus(data, config.nal_length_size)
    has_idr = any((n[0] & 0x1F) == NAL_IDR for n in nalus)
    if keyframe or has_idr:
        for ps in config.sps + config.pps:
            parts += [START_CODE, ps]
    for nal in nalus:
        nal_type = nal[0] & 0x1F
        if nal_type == NAL_AUD or ((keyframe or has_idr) and nal_type in (NAL_SPS, NAL_PPS)):
            continue
        parts += [START_CODE, nal]
    return b"".join(parts)


def is_reference(data: bytes, length_size: int = 4) -> bool:
    """Whether any slice of this access unit is used for reference (nal_ref_idc != 0).

    Frames that are not can be dropped without breaking the decoding of any other frame.
    Malformed units count as reference: only a frame known to be disposable is treated so."""
    pos = 0
    end = len(data)
    seen_slice = False
    while pos + length_size < end:
        length = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if length == 0 or pos + length > end:
            return True
        header = data[pos]
        if 1 <= header & 0x1F <= 5:
            if header & 0x60:
                return True
            seen_slice = True
        pos += length
    return not seen_slice


def contains_idr(data: bytes, length_size: int = 4) -> bool:
    try:
        return any((n[0] & 0x1F) == NAL_IDR for n in iter_nalus(data, length_size))
    except H264Error:
        return False


class _BitReader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def bit(self) -> int:
        byte = self.pos >> 3
        if byte >= len(self.data):
            raise H264Error("SPS truncated")
        value = (self.data[byte] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        v = 0
        for _ in range(n):
            v = (v << 1) | self.bit()
        return v

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise H264Error("exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        v = self.ue()
        return (v + 1) // 2 if v & 1 else -(v // 2)


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


@dataclass(frozen=True, slots=True)
class SpsInfo:
    profile: int
    level: int
    width: int
    height: int


def parse_sps(nal: bytes) -> SpsInfo:
    """Picture size from a sequence parameter set (ITU-T H.264 7.3.2.1.1)."""
    r = _BitReader(_unescape(nal[1:]))
    profile = r.bits(8)
    r.bits(8)
    level = r.bits(8)
    r.ue()
    chroma_format_idc = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format_idc = r.ue()
        if chroma_format_idc == 3:
            r.bit()
        r.ue()
        r.ue()
        r.bit()
        if r.bit():
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.bit():
                    size = 16 if i < 6 else 64
                    last = nxt = 8
                    for _ in range(size):
                        if nxt != 0:
                            nxt = (last + r.se() + 256) % 256
                        last = nxt if nxt != 0 else last
    r.ue()
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.bit()
        r.se()
        r.se()
        cycles = r.ue()
        if cycles > 255:
            raise H264Error("SPS declares too many reference frames in POC cycle")
        for _ in range(cycles):
            r.se()
    r.ue()
    r.bit()
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()
    r.bit()
    crop = (0, 0, 0, 0)
    if r.bit():
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    sub_w = 2 if chroma_format_idc in (1, 2) else 1
    sub_h = 2 if chroma_format_idc == 1 else 1
    crop_x = sub_w if chroma_format_idc else 1
    crop_y = (sub_h if chroma_format_idc else 1) * (2 - frame_mbs_only)
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - crop_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0 or width > 16384 or height > 16384:
        raise H264Error(f"SPS gives an implausible picture size {width}x{height}")
    return SpsInfo(profile, level, width, height)
