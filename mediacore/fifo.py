"""Chooses the compiled PacketFifo when it was built, else the pure-Python twin.

MEDIACORE_NO_EXTENSIONS=1 forces the pure twin (tests run both).
"""

from __future__ import annotations

import os

from mediacore.packet_fifo import PacketFifo as PurePacketFifo

COMPILED = False
PacketFifo: type = PurePacketFifo

if os.environ.get("MEDIACORE_NO_EXTENSIONS") != "1":
    try:
        import cython_ext.packet_fifo as _compiled

        if _compiled.__file__ is not None and not _compiled.__file__.endswith(".py"):
            PacketFifo = _compiled.PacketFifo
            COMPILED = True
    except ImportError:  # not built: the pure twin serves
        pass

__all__ = ["COMPILED", "PacketFifo", "PurePacketFifo"]
