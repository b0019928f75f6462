"""What a depacketizer hands on: one access unit (a coded frame) with its RTP timestamp."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AccessUnit:
    timestamp: int  # RTP timestamp (32-bit, as sent)
    data: bytes  # H.264: AVCC; AAC: one raw frame
    keyframe: bool
