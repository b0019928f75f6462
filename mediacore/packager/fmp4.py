"""Fragmented MP4 (CMAF) boxes, written by hand.

Why not PyAV's mp4 muxer: LL-HLS parts must end at frames we choose, the moment the part is
complete, and libavformat only fragments on its own schedule (PyAV exposes neither
av_write_frame(NULL) flushes nor per-fragment output). The boxes needed are few and fixed:
an init segment (ftyp + moov with mvex, avc1/hvc1/av01/mp4a sample entries; HLS E6, E8) and one
moof + mdat per part (tfdt in every traf, default-base-is-moof addressing, trun v1 with
signed composition offsets). A parent segment is the byte concatenation of its parts (L7).
Timed metadata rides in a part as `emsg` boxes before its moof (version 1: an absolute
presentation time in the track's timescale; scheme https://aomedia.org/emsg/ID3, AOM "ID3
Timed Metadata in CMAF"; the message is an ID3 tag, mediacore/packager/metadata.py).
ISO/IEC 14496-12 and -15, ISO/IEC 23000-19 (CMAF), ISO/IEC 23009-1 5.10.3.3 (emsg).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mediacore.model.aac import parse_asc
from mediacore.model.media import Kind, Track

MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
SYNC_SAMPLE = 0x02000000  # sample_depends_on = 2 (does not depend on others)
NON_SYNC_SAMPLE = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample = 1


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def _descriptor(tag: int, body: bytes) -> bytes:
    length = len(body)
    if length > 0x0FFFFFFF:
        raise ValueError("descriptor too long")
    size = bytes(
        [0x80 | ((length >> 21) & 0x7F), 0x80 | ((length >> 14) & 0x7F), 0x80 | ((length >> 7) & 0x7F), length & 0x7F]
    )
    return bytes([tag]) + size + body


def _esds(asc: bytes) -> bytes:
    decoder_specific = _descriptor(0x05, asc)
    decoder_config = _descriptor(
        0x04, bytes([0x40, 0x15]) + b"\x00\x00\x00" + struct.pack(">II", 0, 0) + decoder_specific
    )
    sl_config = _descriptor(0x06, b"\x02")
    return full_box(b"esds", 0, 0, _descriptor(0x03, struct.pack(">HB", 0, 0) + decoder_config + sl_config))


VIDEO_SAMPLE_ENTRIES = {"h264": (b"avc1", b"avcC"), "hevc": (b"hvc1", b"hvcC"), "av1": (b"av01", b"av1C")}
"""Video codec -> (sample entry, configuration box holding the Track's config record as it is).
HEVC goes out as `hvc1` (what Apple's HLS authoring spec asks for), with the parameter sets
of the Enhanced RTMP sequence start in its hvcC; samples keep whatever the encoder repeats
in-band."""


def _sample_entry(track: Track) -> bytes:
    if track.kind is Kind.VIDEO:
        entry, config_box = VIDEO_SAMPLE_ENTRIES[track.codec]
        return box(
            entry,
            b"\x00" * 6 + struct.pack(">H", 1),
            b"\x00" * 16,
            struct.pack(">HHIIIH", track.width, track.height, 0x00480000, 0x00480000, 0, 1),
            b"\x00" * 32,
            struct.pack(">Hh", 0x0018, -1),
            box(config_box, track.config),
        )
    asc = parse_asc(track.config)
    channels = asc.channels or 2
    rate = track.timebase if track.timebase < 65536 else 0
    return box(
        b"mp4a",
        b"\x00" * 6 + struct.pack(">H", 1),
        b"\x00" * 8,
        struct.pack(">HHHHI", channels, 16, 0, 0, rate << 16),
        _esds(track.config),
    )


def init_segment(track: Track, track_id: int = 1) -> bytes:
    """ftyp + moov for one track: no samples, zero durations, mvex present (HLS E6)."""
    video = track.kind is Kind.VIDEO
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41dash")
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, 1000, 0),
        struct.pack(">IH", 0x00010000, 0x0100),
        b"\x00" * 10,
        MATRIX,
        b"\x00" * 24,
        struct.pack(">I", track_id + 1),
    )
    tkhd = full_box(
        b"tkhd",
        0,
        3,
        struct.pack(">IIIII", 0, 0, track_id, 0, 0),
        b"\x00" * 8,
        struct.pack(">hhhH", 0, 0, 0 if video else 0x0100, 0),
        MATRIX,
        struct.pack(">II", (track.width if video else 0) << 16, (track.height if video else 0) << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timebase, 0, 0x55C4, 0))
    handler = b"vide" if video else b"soun"
    hdlr = full_box(
        b"hdlr",
        0,
        0,
        struct.pack(">I", 0),
        handler,
        b"\x00" * 12,
        (b"VideoHandler" if video else b"SoundHandler") + b"\x00",
    )
    media_header = full_box(b"vmhd", 0, 1, b"\x00" * 8) if video else full_box(b"smhd", 0, 0, b"\x00" * 4)
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry(track)),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    trak = box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl)))
    mvex = box(b"mvex", full_box(b"trex", 0, 0, struct.pack(">IIIII", track_id, 1, 0, 0, 0)))
    return ftyp + box(b"moov", mvhd, trak, mvex)


EMSG_ID3_SCHEME = "https://aomedia.org/emsg/ID3"
EMSG_UNKNOWN_DURATION = 0xFFFFFFFF


def emsg(timescale: int, presentation_time: int, duration: int | None, event_id: int, message: bytes) -> bytes:
    """An emsg box, version 1, carrying an ID3 tag at `presentation_time` (track ticks);
    `duration` in ticks, None for unknown."""
    return full_box(
        b"emsg",
        1,
        0,
        struct.pack(
            ">IQII",
            timescale,
            presentation_time,
            EMSG_UNKNOWN_DURATION if duration is None else min(duration, EMSG_UNKNOWN_DURATION - 1),
            event_id & 0xFFFFFFFF,
        ),
        EMSG_ID3_SCHEME.encode() + b"\x00",
        b"\x00",  # value: empty
        message,
    )


@dataclass(slots=True)
class Sample:
    duration: int  # track timebase ticks
    data: bytes
    keyframe: bool
    composition_offset: int  # pts - dts


_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800
"""trun flags: data offset, and per sample its duration, size, flags and composition offset."""
_MOOF_FIXED = 88
"""Bytes of a moof besides its trun entries: moof 8, mfhd 16, traf 8, tfhd 16, tfdt (v1) 20,
trun (v1) header 20."""
_MOOF_HEAD = struct.Struct(">I4s" + "I4sII" + "I4s" + "I4sII" + "I4sIQ" + "I4sIIi")


def fragment(samples: list[Sample], base_decode_time: int, sequence: int, track_id: int = 1) -> bytes:
    """One moof + mdat holding `samples` (a part, or a whole segment's worth). Sizes are
    known before writing (a trun entry is 16 bytes), so the boxes are packed in one go and
    the payload is copied once, into the result."""
    count = len(samples)
    moof_size = _MOOF_FIXED + 16 * count
    entries: list[int] = []
    payload_size = 0
    for s in samples:
        size = len(s.data)
        payload_size += size
        entries += (s.duration, size, SYNC_SAMPLE if s.keyframe else NON_SYNC_SAMPLE, s.composition_offset)
    head = _MOOF_HEAD.pack(
        moof_size,
        b"moof",
        16,
        b"mfhd",
        0,
        sequence,
        moof_size - 24,
        b"traf",
        16,
        b"tfhd",
        0x020000,  # default-base-is-moof
        track_id,
        20,
        b"tfdt",
        1 << 24,  # version 1: 64-bit base decode time
        base_decode_time,
        20 + 16 * count,
        b"trun",
        (1 << 24) | _TRUN_FLAGS,  # version 1: signed composition offsets
        count,
        moof_size + 8,  # data offset: the first sample, just past the mdat header
    )
    table = struct.pack(">" + "IIIi" * count, *entries)
    mdat = struct.pack(">I4s", 8 + payload_size, b"mdat")
    return b"".join([head, table, mdat, *(s.data for s in samples)])
