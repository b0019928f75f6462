"""Chooses the compiled twin of a hot-loop class when it was built, else its pure twin.

MEDIACORE_NO_EXTENSIONS=1 forces the pure twins (tests run both builds)."""

from __future__ import annotations

import importlib
import os

from mediacore.jitter_buffer import JitterBuffer as PureJitterBuffer
from mediacore.packet_fifo import PacketFifo as PurePacketFifo
from mediacore.priority_queue import PriorityPacketQueue as PurePriorityPacketQueue


def pick(module: str, name: str, pure: type) -> tuple[type, bool]:
    if os.environ.get("MEDIACORE_NO_EXTENSIONS") == "1":
        return pure, False
    try:
        compiled = importlib.import_module(module)
    except ImportError:  # not built: the pure twin serves
        return pure, False
    if compiled.__file__ is None or compiled.__file__.endswith(".py"):
        return pure, False
    return getattr(compiled, name), True


PacketFifo, FIFO_COMPILED = pick("cython_ext.packet_fifo", "PacketFifo", PurePacketFifo)
JitterBuffer, JITTER_COMPILED = pick("cython_ext.jitter_buffer", "JitterBuffer", PureJitterBuffer)
PriorityPacketQueue, QUEUE_COMPILED = pick("cython_ext.priority_queue", "PriorityPacketQueue",
                                           PurePriorityPacketQueue)
