"""Chooses the compiled twin of a hot-loop class when it was built, else its pure twin.

MEDIACORE_NO_EXTENSIONS=1 forces the pure twins (tests run both builds)."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Callable

from ingest.rtp import rtp_packet as pure_rtp_packet
from ingest.rtp.h264_depacketize import H264Depacketizer as PureH264Depacketizer
from mediacore.jitter_buffer import JitterBuffer as PureJitterBuffer
from mediacore.packet_fifo import PacketFifo as PurePacketFifo
from mediacore.priority_queue import PriorityPacketQueue as PurePriorityPacketQueue


def pick_module(module: str, pure: ModuleType) -> tuple[ModuleType, bool]:
    if os.environ.get("MEDIACORE_NO_EXTENSIONS") == "1":
        return pure, False
    try:
        compiled = importlib.import_module(module)
    except ImportError:  # not built: the pure twin serves
        return pure, False
    if compiled.__file__ is None or compiled.__file__.endswith(".py"):
        return pure, False
    return compiled, True


def pick(module: str, name: str, pure: type) -> tuple[type, bool]:
    chosen, compiled = pick_module(module, sys.modules[pure.__module__])
    return getattr(chosen, name), compiled


PacketFifo, FIFO_COMPILED = pick("cython_ext.packet_fifo", "PacketFifo", PurePacketFifo)
JitterBuffer, JITTER_COMPILED = pick("cython_ext.jitter_buffer", "JitterBuffer", PureJitterBuffer)
PriorityPacketQueue, QUEUE_COMPILED = pick("cython_ext.priority_queue", "PriorityPacketQueue",
                                           PurePriorityPacketQueue)
_rtp, RTP_COMPILED = pick_module("cython_ext.rtp_packet", pure_rtp_packet)
RtpPacket: type[pure_rtp_packet.RtpPacket] = _rtp.RtpPacket
parse_rtp: Callable[[bytes], pure_rtp_packet.RtpPacket] = _rtp.parse_rtp
H264Depacketizer, DEPACKETIZER_COMPILED = pick("cython_ext.h264_depacketize", "H264Depacketizer",
                                              PureH264Depacketizer)
