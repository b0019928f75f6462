"""The media model shared by ingest, hub and packagers.

Timestamps are unwrapped 64-bit integers in the track's timebase (1/90000 for video,
1/sample_rate for audio). Frames are immutable once published: fan-out shares them and never
copies their payloads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    VIDEO = "video"
    AUDIO = "audio"

    # Members are singletons: hashing by identity is correct, and a C slot instead of
    # Enum's Python-level hash of the name (a dict lookup keyed by Kind is made about ten
    # times per frame).
    __hash__ = object.__hash__


VIDEO_TIMEBASE = 90000

FMP4_ONLY_CODECS = frozenset({"hevc", "av1"})
"""Video codecs that go out through fragmented MP4 alone: LL-HLS, and `index.m3u8` serves the
same fMP4 playlists for them instead of MPEG-TS (HEVC in TS is not for Safari, AV1 in TS is
not for anyone). H.264 streams keep MPEG-TS at `index.m3u8`."""


@dataclass(frozen=True, slots=True)
class Track:
    """One elementary stream. `config` is the codec configuration record: an
    AVCDecoderConfigurationRecord (avcC) for H.264, an HEVCDecoderConfigurationRecord (hvcC)
    for HEVC, an AV1CodecConfigurationRecord (av1C) for AV1, an AudioSpecificConfig for AAC."""

    kind: Kind
    codec: str  # "h264", "hevc", "av1" or "aac"
    timebase: int  # ticks per second
    config: bytes
    codec_string: str = ""  # RFC 6381 form, e.g. "avc1.64001f", "hvc1.1.6.L93.B0", "av01.0.04M.08", "mp4a.40.2"
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0


@dataclass(frozen=True, slots=True)
class Frame:
    """One access unit: an H.264 or HEVC picture as length-prefixed NAL units, an AV1
    temporal unit (low-overhead OBUs, no temporal delimiter), or one raw AAC frame.
    `wallclock` is the ingest wall-clock time (seconds since the epoch) that corresponds to
    `pts`; packagers derive PROGRAM-DATE-TIME from it."""

    track: Track
    dts: int
    pts: int
    keyframe: bool
    data: bytes
    wallclock: float = 0.0

    @property
    def kind(self) -> Kind:
        return self.track.kind

    def seconds(self) -> float:
        return self.dts / self.track.timebase
