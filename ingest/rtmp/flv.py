"""FLV audio and video tag bodies as carried in RTMP messages (FLV specification E.4.2-3),
and the Enhanced RTMP v1 video tag (veovera/enhanced-rtmp, "ExVideoTagHeader").

An enhanced video tag sets the top bit of its first byte (IsExHeader); the next three bits
are the frame type and the low four a PacketType, followed by a FourCC:
- SequenceStart (0): the codec configuration record (hvcC for `hvc1`, av1C for `av01`);
- CodedFrames (1): for `hvc1` (and `avc1`) an SI24 composition time offset, then the frame;
  for `av01` the frame alone (AV1 carries no composition offset);
- SequenceEnd (2), Metadata (4: AMF `colorInfo`, the frame type bits are not one),
  MPEG2TSSequenceStart (5): no frame;
- CodedFramesX (3): the frame with a composition time offset of zero.
parse_video() maps both tag forms onto one VideoTag (packet types SEQUENCE_START,
CODED_FRAMES, SEQUENCE_END, OTHER), checking each header's size before reading it.
Packet types of later versions (Multitrack 6, ModEx 7) and undefined ones are refused, as
the spec asks parsers to fail when signalling is not understood.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RtmpError

# Video
FRAME_KEY = 1
FRAME_INTER = 2
FRAME_DISPOSABLE = 3
FRAME_COMMAND = 5
CODEC_AVC = 7
AVC_SEQUENCE_HEADER = 0
AVC_NALU = 1
AVC_END_OF_SEQUENCE = 2
# Packet types of a VideoTag (legacy AVCPacketType values, which the enhanced ones map onto)
SEQUENCE_START = AVC_SEQUENCE_HEADER
CODED_FRAMES = AVC_NALU
SEQUENCE_END = AVC_END_OF_SEQUENCE
OTHER = -1  # no frame: a command frame, metadata, an unsupported codec
# Enhanced RTMP PacketType
EX_SEQUENCE_START = 0
EX_CODED_FRAMES = 1
EX_SEQUENCE_END = 2
EX_CODED_FRAMES_X = 3
EX_METADATA = 4
EX_MPEG2TS_SEQUENCE_START = 5
FOURCC_CODECS = {"avc1": "h264", "hvc1": "hevc", "av01": "av1"}
"""Enhanced RTMP video FourCCs this server takes, and the Track codec each becomes."""
_WITH_COMPOSITION_TIME = ("avc1", "hvc1")
# Audio
SOUND_AAC = 10
AAC_SEQUENCE_HEADER = 0
AAC_RAW = 1


@dataclass(slots=True)
class VideoTag:
    frame_type: int
    codec: str  # "h264", "hevc", "av1", or the unsupported codec's name
    packet_type: int  # SEQUENCE_START, CODED_FRAMES, SEQUENCE_END, OTHER
    composition_time: int  # milliseconds, signed
    body: bytes
    fourcc: str = ""  # the Enhanced RTMP FourCC, "" for a legacy tag


@dataclass(slots=True)
class AudioTag:
    sound_format: int
    packet_type: int
    body: bytes


_VIDEO_CODECS = {2: "h263", 3: "screen", 4: "vp6", 5: "vp6a", 6: "screen2", 7: "h264", 12: "hevc"}


def _si24(data: bytes) -> int:
    value = int.from_bytes(data, "big")
    return value - 0x1000000 if value & 0x800000 else value


def parse_video(payload: bytes) -> VideoTag:
    if len(payload) < 1:
        raise RtmpError("empty video message")
    b0 = payload[0]
    if b0 & 0x80:
        return _parse_enhanced(payload)
    frame_type = b0 >> 4
    codec_id = b0 & 0x0F
    codec = _VIDEO_CODECS.get(codec_id, f"codec {codec_id}")
    if codec_id != CODEC_AVC or frame_type == FRAME_COMMAND:
        return VideoTag(frame_type, codec, OTHER, 0, b"")
    if len(payload) < 5:
        raise RtmpError(f"AVC video message of {len(payload)} bytes is shorter than its 5-byte header")
    return VideoTag(frame_type, "h264", payload[1], _si24(payload[2:5]), payload[5:])


def _parse_enhanced(payload: bytes) -> VideoTag:
    b0 = payload[0]
    frame_type = (b0 >> 4) & 0x07
    packet_type = b0 & 0x0F
    if len(payload) < 5:
        raise RtmpError(f"Enhanced RTMP video message of {len(payload)} bytes is shorter than its 5-byte header")
    fourcc = payload[1:5].decode("latin-1")
    if packet_type > EX_MPEG2TS_SEQUENCE_START:
        raise RtmpError(f"Enhanced RTMP video packet type {packet_type} is not supported (v1 types 0-5 only)")
    codec = FOURCC_CODECS.get(fourcc, fourcc)
    if packet_type == EX_METADATA or frame_type == FRAME_COMMAND or packet_type == EX_MPEG2TS_SEQUENCE_START:
        return VideoTag(frame_type, codec, OTHER, 0, b"", fourcc)
    if packet_type == EX_SEQUENCE_START:
        return VideoTag(frame_type, codec, SEQUENCE_START, 0, payload[5:], fourcc)
    if packet_type == EX_SEQUENCE_END:
        return VideoTag(frame_type, codec, SEQUENCE_END, 0, b"", fourcc)
    if packet_type == EX_CODED_FRAMES and fourcc in _WITH_COMPOSITION_TIME:
        if len(payload) < 8:
            raise RtmpError(f"Enhanced RTMP {fourcc} coded frames of {len(payload)} bytes lack the composition time")
        return VideoTag(frame_type, codec, CODED_FRAMES, _si24(payload[5:8]), payload[8:], fourcc)
    return VideoTag(frame_type, codec, CODED_FRAMES, 0, payload[5:], fourcc)


def parse_audio(payload: bytes) -> AudioTag:
    if len(payload) < 1:
        raise RtmpError("empty audio message")
    sound_format = payload[0] >> 4
    if sound_format != SOUND_AAC:
        return AudioTag(sound_format, -1, b"")
    if len(payload) < 2:
        raise RtmpError("AAC audio message shorter than its 2-byte header")
    return AudioTag(sound_format, payload[1], payload[2:])


def video_payload(keyframe: bool, packet_type: int, cts: int, body: bytes) -> bytes:
    """Build an AVC video message body (for clients and tests)."""
    return (
        bytes((((FRAME_KEY if keyframe else FRAME_INTER) << 4) | CODEC_AVC, packet_type))
        + (cts & 0xFFFFFF).to_bytes(3, "big")
        + body
    )


def ex_video_payload(fourcc: str, packet_type: int, body: bytes, keyframe: bool = False, cts: int = 0) -> bytes:
    """Build an Enhanced RTMP video message body (for clients and tests). CodedFrames of a
    FourCC that carries a composition time get `cts` (ms) before the body."""
    header = bytes((0x80 | ((FRAME_KEY if keyframe else FRAME_INTER) << 4) | packet_type,)) + fourcc.encode("latin-1")
    if packet_type == EX_CODED_FRAMES and fourcc in _WITH_COMPOSITION_TIME:
        header += (cts & 0xFFFFFF).to_bytes(3, "big")
    return header + body


def audio_payload(packet_type: int, body: bytes) -> bytes:
    """Build an AAC audio message body (44 kHz/16-bit/stereo flags, as FLV requires for AAC)."""
    return bytes(((SOUND_AAC << 4) | 0x0F, packet_type)) + body


def iter_aggregate(payload: bytes) -> list[tuple[int, int, bytes]]:
    """Split an aggregate message (type 22) into (type_id, timestamp_ms, body) sub-messages."""
    out = []
    pos = 0
    end = len(payload)
    while pos < end:
        if pos + 11 > end:
            raise RtmpError("aggregate message truncated in a tag header")
        type_id = payload[pos]
        size = int.from_bytes(payload[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(payload[pos + 4 : pos + 7], "big") | (payload[pos + 7] << 24)
        pos += 11
        if pos + size + 4 > end:
            raise RtmpError(f"aggregate sub-message declares {size} bytes past the message")
        out.append((type_id, ts, payload[pos : pos + size]))
        pos += size + 4
    return out
