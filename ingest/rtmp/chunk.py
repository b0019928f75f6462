"""The RTMP chunk stream (RTMP specification 5.3): bytes <-> messages.

ChunkReader is sans-I/O: feed() takes whatever bytes arrived and returns the messages they
complete. It applies Set Chunk Size and Abort itself, because they change how the very next
byte is parsed. Declared message lengths are checked against the limits when the header
arrives, before any body is buffered, and partial messages are held as lists of the chunks
that carried them, so memory only ever grows with bytes actually received.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .config import RtmpConfig
from .errors import RtmpError

_DEFAULTS = RtmpConfig()  # every bound is named once, in ingest/rtmp/config.py

# Message type ids (RTMP specification 5.4, 7.1).
SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
COMMAND_AMF3 = 17
DATA_AMF0 = 18
COMMAND_AMF0 = 20
AGGREGATE = 22

DEFAULT_CHUNK_SIZE = 128
EXTENDED = 0xFFFFFF
MAX_CSID = 65599
_HEADER_SIZES = (11, 7, 3, 0)


@dataclass(frozen=True, slots=True)
class ChunkLimits:
    max_chunk_size: int = _DEFAULTS.max_chunk_size
    max_message_size: int = _DEFAULTS.max_message_size
    max_chunk_streams: int = _DEFAULTS.max_chunk_streams
    max_buffered_bytes: int = _DEFAULTS.max_buffered_bytes


@dataclass(slots=True)
class Message:
    type_id: int
    stream_id: int
    timestamp: int  # 32-bit milliseconds as sent; unwrapped later, per stream
    payload: bytes
    csid: int = 0


@dataclass(slots=True)
class _ChunkStream:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    ext_value: int = 0
    parts: list[bytes] = field(default_factory=list)
    received: int = 0
    in_progress: bool = False


class ChunkReader:
    """Reassembles messages from chunks. Raises RtmpError on any violation."""

    def __init__(self, limits: ChunkLimits = ChunkLimits()) -> None:
        self.limits = limits
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._buf = bytearray()
        self._streams: dict[int, _ChunkStream] = {}
        self._buffered = 0
        self.bytes_received = 0

    @property
    def buffered(self) -> int:
        """Bytes held: unparsed input plus bodies of incomplete messages."""
        return len(self._buf) + self._buffered

    def feed(self, data: bytes) -> list[Message]:
        self.bytes_received += len(data)
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos = 0
        end = len(buf)
        limits = self.limits
        view = memoryview(buf)  # chunk bodies are copied once, straight out of the buffer
        try:
            pos = self._parse(buf, view, pos, end, limits, out)
        finally:
            view.release()
        if pos:
            del buf[:pos]
        return out

    def _parse(
        self, buf: bytearray, view: memoryview, pos: int, end: int, limits: ChunkLimits, out: list[Message]
    ) -> int:
        while pos < end:
            start = pos
            b0 = buf[pos]
            fmt = b0 >> 6
            csid = b0 & 0x3F
            pos += 1
            if csid == 0:
                if pos + 1 > end:
                    pos = start
                    break
                csid = buf[pos] + 64
                pos += 1
            elif csid == 1:
                if pos + 2 > end:
                    pos = start
                    break
                csid = buf[pos] + (buf[pos + 1] << 8) + 64
                pos += 2
            header_size = _HEADER_SIZES[fmt]
            if pos + header_size > end:
                pos = start
                break
            cs = self._streams.get(csid)
            if cs is None:
                if fmt != 0:
                    raise RtmpError(f"chunk stream {csid}: format {fmt} header with no previous type 0 header")
                if len(self._streams) >= limits.max_chunk_streams:
                    raise RtmpError(f"more than {limits.max_chunk_streams} chunk streams in use")
                cs = _ChunkStream()
                self._streams[csid] = cs
            # Parse into locals; state changes only once the whole chunk is available.
            ts_field = cs.delta
            length = cs.length
            type_id = cs.type_id
            stream_id = cs.stream_id
            extended = cs.extended
            if fmt <= 2:
                ts_field = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
                if fmt <= 1:
                    length = (buf[pos + 3] << 16) | (buf[pos + 4] << 8) | buf[pos + 5]
                    type_id = buf[pos + 6]
                    if fmt == 0:
                        stream_id = int.from_bytes(buf[pos + 7 : pos + 11], "little")
                pos += header_size
                extended = ts_field == EXTENDED
                if extended:
                    if pos + 4 > end:
                        pos = start
                        break
                    ts_field = int.from_bytes(buf[pos : pos + 4], "big")
                    pos += 4
            continuation = fmt == 3 and cs.in_progress
            if fmt == 3 and extended:
                # A type 3 chunk repeats the extended timestamp. Some encoders omit it on
                # continuation chunks: accept 4 bytes only if they equal the stored value.
                if continuation:
                    remaining_body = cs.length - cs.received
                    if remaining_body >= 4 or pos + 4 <= end:
                        if pos + 4 > end:
                            pos = start
                            break
                        if int.from_bytes(buf[pos : pos + 4], "big") == cs.ext_value:
                            pos += 4
                else:
                    if pos + 4 > end:
                        pos = start
                        break
                    ts_field = int.from_bytes(buf[pos : pos + 4], "big")
                    pos += 4
            if not continuation:
                if length > limits.max_message_size:
                    raise RtmpError(
                        f"message of {length} bytes on chunk stream {csid} exceeds the limit of "
                        f"{limits.max_message_size}"
                    )
                received = 0
            else:
                received = cs.received
            take = min(self.chunk_size, length - received)
            if pos + take > end:
                pos = start
                break
            # Commit the header.
            if not continuation:
                if cs.in_progress:
                    # A new header abandons the unfinished message (as if Abort had been sent).
                    self._buffered -= cs.received
                    cs.parts.clear()
                timestamp = ts_field if fmt == 0 else (cs.timestamp + ts_field) & 0xFFFFFFFF
                cs.timestamp = timestamp
                cs.delta = ts_field
                cs.length = length
                cs.type_id = type_id
                cs.stream_id = stream_id
                cs.extended = extended
                cs.ext_value = ts_field if extended else 0
                cs.received = 0
                cs.in_progress = True
            body = bytes(view[pos : pos + take])
            pos += take
            cs.received += take
            if cs.received < cs.length:
                cs.parts.append(body)
                self._buffered += take
                if self._buffered > limits.max_buffered_bytes:
                    raise RtmpError(f"more than {limits.max_buffered_bytes} bytes of incomplete messages buffered")
                continue
            if cs.parts:
                cs.parts.append(body)
                payload = b"".join(cs.parts)
                self._buffered -= cs.received - take
                cs.parts.clear()
            else:
                payload = body
            cs.in_progress = False
            msg = Message(cs.type_id, cs.stream_id, cs.timestamp, payload, csid)
            if msg.type_id == SET_CHUNK_SIZE:
                self._set_chunk_size(payload)
            elif msg.type_id == ABORT:
                self._abort(payload)
            out.append(msg)
        return pos

    def _set_chunk_size(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise RtmpError("Set Chunk Size message shorter than 4 bytes")
        size = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        if size < 1:
            raise RtmpError("Set Chunk Size of 0 is invalid")
        if size > self.limits.max_chunk_size:
            raise RtmpError(f"Set Chunk Size {size} exceeds the limit of {self.limits.max_chunk_size}")
        self.chunk_size = size

    def _abort(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise RtmpError("Abort message shorter than 4 bytes")
        cs = self._streams.get(int.from_bytes(payload[:4], "big"))
        if cs is not None and cs.in_progress:
            self._buffered -= cs.received
            cs.parts.clear()
            cs.in_progress = False


def basic_header(fmt: int, csid: int) -> bytes:
    if not 2 <= csid <= MAX_CSID:
        raise ValueError(f"chunk stream id {csid} out of range")
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    return bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))


class ChunkWriter:
    """Splits messages into chunks, every message with a full (type 0) header: the server
    sends few, small messages, and any peer reads type 0."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size

    def write(self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> bytes:
        timestamp &= 0xFFFFFFFF
        extended = timestamp >= EXTENDED
        ext = struct.pack(">I", timestamp) if extended else b""
        header = basic_header(0, csid) + (EXTENDED if extended else timestamp).to_bytes(3, "big")
        header += len(payload).to_bytes(3, "big") + bytes((type_id,)) + stream_id.to_bytes(4, "little")
        return join_chunks(header + ext, basic_header(3, csid) + ext, payload, self.chunk_size)


def join_chunks(first_header: bytes, continuation: bytes, payload: bytes, chunk_size: int) -> bytes:
    """A message's chunks: the first header, then `continuation` before each further chunk."""
    out = [first_header]
    for offset in range(0, max(len(payload), 1), chunk_size):
        if offset:
            out.append(continuation)
        out.append(payload[offset : offset + chunk_size])
    return b"".join(out)
