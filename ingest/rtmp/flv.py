"""FLV audio and video tag bodies as carried in RTMP messages (FLV specification E.4.2-3)."""

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
# Audio
SOUND_AAC = 10
AAC_SEQUENCE_HEADER = 0
AAC_RAW = 1


@dataclass(frozen=True, slots=True)
class VideoTag:
    frame_type: int
    codec: str  # "h264" or the unsupported codec's name
    packet_type: int  # AVC_SEQUENCE_HEADER, AVC_NALU, AVC_END_OF_SEQUENCE
    composition_time: int  # milliseconds, signed
    body: bytes


@dataclass(frozen=True, slots=True)
class AudioTag:
    sound_format: int
    packet_type: int
    body: bytes


_VIDEO_CODECS = {2: "h263", 3: "screen", 4: "vp6", 5: "vp6a", 6: "screen2", 7: "h264", 12: "hevc"}


def parse_video(payload: bytes) -> VideoTag:
    if len(payload) < 1:
        raise RtmpError("empty video message")
    b0 = payload[0]
    if b0 & 0x80:
        # Enhanced RTMP (FourCC) header: recognised so that it can be refused clearly.
        if len(payload) < 5:
            raise RtmpError("enhanced RTMP video header truncated")
        fourcc = payload[1:5].decode("latin-1")
        codec = "h264" if fourcc == "avc1" else fourcc
        return VideoTag((b0 >> 4) & 0x07, codec, b0 & 0x0F, 0, b"")
    frame_type = b0 >> 4
    codec_id = b0 & 0x0F
    codec = _VIDEO_CODECS.get(codec_id, f"codec {codec_id}")
    if codec_id != CODEC_AVC or frame_type == FRAME_COMMAND:
        return VideoTag(frame_type, codec, -1, 0, b"")
    if len(payload) < 5:
        raise RtmpError(f"AVC video message of {len(payload)} bytes is shorter than its 5-byte header")
    cts = int.from_bytes(payload[2:5], "big")
    if cts & 0x800000:
        cts -= 0x1000000
    return VideoTag(frame_type, "h264", payload[1], cts, payload[5:])


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
