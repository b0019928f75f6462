"""The hub's bounded priority queue, compiled when built (see mediacore/model/compiled.py)."""

from __future__ import annotations

from mediacore.hub.priority_queue import PriorityPacketQueue as PurePriorityPacketQueue
from mediacore.model.compiled import pick

PriorityPacketQueue, QUEUE_COMPILED = pick("cython_ext.priority_queue", "PriorityPacketQueue", PurePriorityPacketQueue)

__all__ = ["QUEUE_COMPILED", "PriorityPacketQueue", "PurePriorityPacketQueue"]
