"""The RTP hot loops, compiled when built (see mediacore/model/compiled.py)."""

from __future__ import annotations

from collections.abc import Callable

from ingest.rtp import rtp_packet as pure_rtp_packet
from ingest.rtp.h264_depacketize import H264Depacketizer as PureH264Depacketizer
from ingest.rtp.jitter_buffer import JitterBuffer as PureJitterBuffer
from mediacore.model.compiled import pick, pick_module

JitterBuffer, JITTER_COMPILED = pick("cython_ext.jitter_buffer", "JitterBuffer", PureJitterBuffer)
_rtp, RTP_COMPILED = pick_module("cython_ext.rtp_packet", pure_rtp_packet)
RtpPacket: type[pure_rtp_packet.RtpPacket] = _rtp.RtpPacket
parse_rtp: Callable[[bytes], pure_rtp_packet.RtpPacket] = _rtp.parse_rtp
H264Depacketizer, DEPACKETIZER_COMPILED = pick("cython_ext.h264_depacketize", "H264Depacketizer", PureH264Depacketizer)

__all__ = [
    "DEPACKETIZER_COMPILED",
    "JITTER_COMPILED",
    "RTP_COMPILED",
    "H264Depacketizer",
    "JitterBuffer",
    "PureH264Depacketizer",
    "PureJitterBuffer",
    "RtpPacket",
    "parse_rtp",
    "pure_rtp_packet",
]
