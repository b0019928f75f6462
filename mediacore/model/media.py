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


VIDEO_TIMEBASE = 90000


@dataclass(frozen=True, slots=True)
class Track:
    """One elementary stream. `config` is the codec configuration record: an
    AVCDecoderConfigurationRecord (avcC) for H.264, an AudioSpecificConfig for AAC."""

    kind: Kind
    codec: str  # "h264" or "aac"
    timebase: int  # ticks per second
    config: bytes
    codec_string: str = ""  # RFC 6381 form, e.g. "avc1.64001f", "mp4a.40.2"
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0


@dataclass(frozen=True, slots=True)
class Frame:
    """One access unit: an H.264 picture as length-prefixed (AVCC) NAL units, or one raw
    AAC frame. `wallclock` is the ingest wall-clock time (seconds since the epoch) that
    corresponds to `pts`; packagers derive PROGRAM-DATE-TIME from it."""

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
