"""Server side of the RTMP handshake (RTMP specification 5.2), simple form.

S1 carries a zero version field, which tells ffmpeg, librtmp (OBS) and GStreamer that no
digest is expected; S2 echoes C1, which is what every client checks if it checks anything.
"""

from __future__ import annotations

import os
import struct

from .errors import RtmpError

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536


class ServerHandshake:
    """feed(bytes) -> bytes to send. `done` once C2 has arrived; `leftover` then holds the
    first chunk-stream bytes that came in the same read."""

    def __init__(self, epoch_ms: int = 0) -> None:
        self._buf = bytearray()
        self._stage = 0  # 0: want C0+C1, 1: want C2, 2: done
        self._epoch_ms = epoch_ms & 0xFFFFFFFF
        self.done = False
        self.leftover = b""

    def feed(self, data: bytes) -> bytes:
        if self.done:
            raise RtmpError("handshake already complete")
        self._buf += data
        out = b""
        if self._stage == 0 and len(self._buf) >= 1 + HANDSHAKE_SIZE:
            version = self._buf[0]
            if version != RTMP_VERSION:
                raise RtmpError(f"RTMP version {version} is not supported (only plain RTMP, version 3)")
            c1 = bytes(self._buf[1 : 1 + HANDSHAKE_SIZE])
            del self._buf[: 1 + HANDSHAKE_SIZE]
            s1 = struct.pack(">II", self._epoch_ms, 0) + os.urandom(HANDSHAKE_SIZE - 8)
            s2 = c1[:4] + struct.pack(">I", self._epoch_ms) + c1[8:]
            out = bytes((RTMP_VERSION,)) + s1 + s2
            self._stage = 1
        elif self._stage == 0 and self._buf and self._buf[0] != RTMP_VERSION:
            raise RtmpError(f"RTMP version {self._buf[0]} is not supported (only plain RTMP, version 3)")
        if self._stage == 1 and len(self._buf) >= HANDSHAKE_SIZE:
            self.leftover = bytes(self._buf[HANDSHAKE_SIZE:])
            self._buf.clear()
            self._stage = 2
            self.done = True
        return out


def client_hello() -> bytes:
    """C0+C1, for clients written on this core (tests, benchmarks)."""
    return bytes((RTMP_VERSION,)) + b"\x00" * 8 + os.urandom(HANDSHAKE_SIZE - 8)
