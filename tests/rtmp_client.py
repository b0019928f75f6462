"""A scripted RTMP publisher built on the project's own chunk writer, for tests that need
exact control of bytes on the wire (bad input, timestamp wraps). Real-encoder interop is
tested with ffmpeg and GStreamer; this one is for what they never send."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from ingest.rtmp import amf0
from ingest.rtmp.chunk import (
    COMMAND_AMF0,
    DEFAULT_CHUNK_SIZE,
    EXTENDED,
    SET_CHUNK_SIZE,
    ChunkReader,
    ChunkWriter,
    basic_header,
    join_chunks,
)
from ingest.rtmp.handshake import HANDSHAKE_SIZE, client_hello


@dataclass(slots=True)
class _Sent:
    timestamp: int
    delta: int
    length: int
    type_id: int
    stream_id: int


class CompressingChunkWriter(ChunkWriter):
    """An encoder's chunk writer: picks header formats 1-3 the way encoders do (same message
    stream -> 1, same length and type too -> 2, same delta too -> 3), so the tests feed the
    server what ffmpeg and OBS send."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        super().__init__(chunk_size)
        self._last: dict[int, _Sent] = {}

    def write(self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> bytes:
        timestamp &= 0xFFFFFFFF
        last = self._last.get(csid)
        if last is None or last.stream_id != stream_id:
            self._last[csid] = _Sent(timestamp, timestamp, len(payload), type_id, stream_id)
            return super().write(csid, type_id, stream_id, timestamp, payload)
        delta = (timestamp - last.timestamp) & 0xFFFFFFFF
        if last.length == len(payload) and last.type_id == type_id:
            fmt = 3 if delta == last.delta else 2
        else:
            fmt = 1
        field_value = last.delta if fmt == 3 else delta
        extended = field_value >= EXTENDED
        ext = struct.pack(">I", field_value) if extended else b""
        header = basic_header(fmt, csid)
        if fmt == 1:
            header += (EXTENDED if extended else delta).to_bytes(3, "big") + len(payload).to_bytes(3, "big")
            header += bytes((type_id,))
        elif fmt == 2:
            header += (EXTENDED if extended else delta).to_bytes(3, "big")
        self._last[csid] = _Sent(timestamp, delta, len(payload), type_id, stream_id)
        return join_chunks(header + ext, basic_header(3, csid) + ext, payload, self.chunk_size)


def publish_sequence(name: str, writer: ChunkWriter, app: str = "live") -> bytes:
    """connect, createStream, publish, as one burst of chunks."""
    out = writer.write(3, COMMAND_AMF0, 0, 0, amf0.encode("connect", 1.0, {"app": app, "tcUrl": f"rtmp://h/{app}"}))
    out += writer.write(3, COMMAND_AMF0, 0, 0, amf0.encode("createStream", 2.0, None))
    out += writer.write(8, COMMAND_AMF0, 1, 0, amf0.encode("publish", 3.0, None, name, "live"))
    return out


class ScriptedPublisher:
    def __init__(self, host: str, port: int, local_host: str | None = None) -> None:
        """`local_host` connects from that loopback address (127.0.0.2 is another host to
        the server)."""
        self.host = host
        self.port = port
        self.local_host = local_host
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.chunks = ChunkWriter(128)
        self.incoming = ChunkReader()

    async def connect(self) -> None:
        local = (self.local_host, 0) if self.local_host is not None else None
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, local_addr=local)
        self.writer.write(client_hello())
        s0s1s2 = await self.reader.readexactly(1 + 2 * HANDSHAKE_SIZE)
        self.writer.write(s0s1s2[1 : 1 + HANDSHAKE_SIZE])
        await self.writer.drain()

    async def publish(self, name: str) -> list[object]:
        self.send(publish_sequence(name, self.chunks))
        return await self.wait_for_status()

    async def wait_for_status(self, timeout: float = 5.0) -> list[object]:
        """Read replies until an onStatus arrives; returns its AMF values."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            data = await asyncio.wait_for(self.reader.read(65536), deadline - loop.time())
            if not data:
                raise ConnectionError("server closed the connection")
            for msg in self.incoming.feed(data):
                if msg.type_id == COMMAND_AMF0:
                    values = amf0.decode(msg.payload)
                    if values and values[0] == "onStatus":
                        return values

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def set_chunk_size(self, size: int) -> None:
        self.send(self.chunks.write(2, SET_CHUNK_SIZE, 0, 0, size.to_bytes(4, "big")))
        self.chunks.chunk_size = size

    async def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (EOF or reset)."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
        except (ConnectionError, asyncio.IncompleteReadError):
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
