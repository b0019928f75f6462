"""The hub's bounded queues, compiled when built (see mediacore/model/compiled.py)."""

from __future__ import annotations

from mediacore.hub.packet_fifo import PacketFifo as PurePacketFifo
from mediacore.hub.priority_queue import PriorityPacketQueue as PurePriorityPacketQueue
from mediacore.model.compiled import pick

PriorityPacketQueue, QUEUE_COMPILED = pick("cython_ext.priority_queue", "PriorityPacketQueue", PurePriorityPacketQueue)
PacketFifo, FIFO_COMPILED = pick("cython_ext.packet_fifo", "PacketFifo", PurePacketFifo)

__all__ = [
    "FIFO_COMPILED",
    "QUEUE_COMPILED",
    "PacketFifo",
    "PriorityPacketQueue",
    "PurePacketFifo",
    "PurePriorityPacketQueue",
]
