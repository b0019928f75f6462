"""The PacketFifo the hub uses: compiled when built (see mediacore/compiled.py)."""

from mediacore.compiled import FIFO_COMPILED as COMPILED
from mediacore.compiled import PacketFifo, PurePacketFifo

__all__ = ["COMPILED", "PacketFifo", "PurePacketFifo"]
