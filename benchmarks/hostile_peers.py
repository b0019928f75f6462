"""Peers that talk to mediacore the way real encoders never do: scripted RTMP and RTSP
clients with exact control of the bytes on the wire, and the hostile peers of the abuse
tests (timestamp jumps, floods of connections and control messages, peers that never read,
bad RTSP Transports, cache-busting HTTP queries). The tests drive them beside a healthy
stream; `mediacore-bench soak` runs them in a loop against a live server.

Each `attack_*` coroutine makes one attempt and returns what the server did (a short
outcome word), never raising for what a hostile peer should expect (a refusal, a reset).
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import av

from ingest.rtmp import amf0
from ingest.rtmp.chunk import (
    ACKNOWLEDGEMENT,
    COMMAND_AMF0,
    DEFAULT_CHUNK_SIZE,
    EXTENDED,
    SET_CHUNK_SIZE,
    USER_CONTROL,
    ChunkReader,
    ChunkWriter,
    basic_header,
    join_chunks,
)
from ingest.rtmp.chunk import AUDIO as RTMP_AUDIO
from ingest.rtmp.chunk import VIDEO as RTMP_VIDEO
from ingest.rtmp.flv import AAC_RAW, AAC_SEQUENCE_HEADER, AVC_NALU, AVC_SEQUENCE_HEADER, audio_payload, video_payload
from ingest.rtmp.handshake import HANDSHAKE_SIZE, client_hello
from ingest.rtmp.session import USER_PING_REQUEST

FFMPEG_SDP = """v=0
o=- 0 0 IN IP4 127.0.0.1
s=No Name
t=0 0
a=tool:libavformat
m=video 0 RTP/AVP 96
a=rtpmap:96 H264/90000
a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QAH6zZQFAFuwEQAAADABAAAAMDIPGDGWA=,aOvssiw=; \
profile-level-id=64001F
a=control:streamid=0
m=audio 0 RTP/AVP 97
b=AS:128
a=rtpmap:97 MPEG4-GENERIC/48000/2
a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=1190
a=control:streamid=1
"""
"""The SDP ffmpeg 5 writes when it ANNOUNCEs 720p H.264 High + AAC 48 kHz stereo."""


# RTMP ------------------------------------------------------------------------------------


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
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.chunks = ChunkWriter(128)
        self.incoming = ChunkReader()

    async def connect(self, local_host: str | None = None) -> None:
        """Handshake; `local_host` connects from that loopback address (another host to the server)."""
        local = (local_host, 0) if local_host is not None else None
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


def ping(writer: ChunkWriter, value: int) -> bytes:
    """A User Control Ping Request: the server owes an 18-byte Ping Response."""
    body = USER_PING_REQUEST.to_bytes(2, "big") + (value & 0xFFFFFFFF).to_bytes(4, "big")
    return writer.write(2, USER_CONTROL, 0, 0, body)


class HostilePublisher:
    """Publishes the test clip's real H.264/AAC frames over RTMP with timestamps of the test's
    choosing: `send(start, end, to_ms, keyframes)` sends the frames whose decode time (ms) is
    in [start, end), each at `to_ms(dts)`, with or without their keyframe flags."""

    def __init__(self, port: int, clip: Path, host: str = "127.0.0.1") -> None:
        container = av.open(str(clip))
        video_stream, audio_stream = container.streams.video[0], container.streams.audio[0]
        self.avcc = bytes(video_stream.codec_context.extradata)
        self.asc = bytes(audio_stream.codec_context.extradata)
        self.packets = [
            (p.stream.type, int(p.dts), int(p.pts - p.dts), p.is_keyframe, bytes(p))
            for p in container.demux()
            if p.size
        ]
        container.close()
        self.client = ScriptedPublisher(host, port)
        self.writer = CompressingChunkWriter()

    async def start(self, name: str = "hostile") -> None:
        await self.client.connect()
        status = await self.client.publish(name)
        if status[3]["code"] != "NetStream.Publish.Start":
            raise ConnectionError(f"publish refused: {status[3]['code']}")
        self.client.set_chunk_size(4096)
        self.writer = self.client.chunks = CompressingChunkWriter(4096)
        self.client.send(self.writer.write(6, RTMP_VIDEO, 1, 0, video_payload(True, AVC_SEQUENCE_HEADER, 0, self.avcc)))
        self.client.send(self.writer.write(4, RTMP_AUDIO, 1, 0, audio_payload(AAC_SEQUENCE_HEADER, self.asc)))

    async def send(
        self, start: int = 0, end: int = 10**9, to_ms: Callable[[int], int] = lambda ms: ms, keyframes: bool = True
    ) -> None:
        for kind, dts, cts, key, data in self.packets:
            if not start <= dts < end:
                continue
            ts = to_ms(dts) & 0xFFFFFFFF
            if kind == "video":
                payload = video_payload(key and keyframes, AVC_NALU, cts, data)
                self.client.send(self.writer.write(6, RTMP_VIDEO, 1, ts, payload))
            else:
                self.client.send(self.writer.write(4, RTMP_AUDIO, 1, ts, audio_payload(AAC_RAW, data)))
            await self.client.writer.drain()

    async def finish(self, name: str = "hostile") -> None:
        self.client.send(self.writer.write(3, COMMAND_AMF0, 0, 0, amf0.encode("FCUnpublish", 5.0, None, name)))
        await self.client.writer.drain()
        await self.client.close()


# RTSP ------------------------------------------------------------------------------------


def rtsp_request(method: str, uri: str, cseq: int, headers: str = "", body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{method} {uri} RTSP/1.0\r\nCSeq: {cseq}\r\n{headers}{length}\r\n".encode() + body


class RtspClient:
    def __init__(self, port: int, local_host: str | None = None, receive_buffer: int = 0) -> None:
        """`local_host` connects from that loopback address (127.0.0.2 is another host to the
        server); `receive_buffer` shrinks SO_RCVBUF (a peer that does not read fills it fast)."""
        self.port = port
        self.local_host = local_host
        self.receive_buffer = receive_buffer
        self.cseq = 0

    async def open(self) -> RtspClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        if self.local_host is not None:
            sock.bind((self.local_host, 0))
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        except OSError:
            sock.close()
            raise
        self.reader, self.writer = await asyncio.open_connection(sock=sock)
        return self

    async def call(self, method: str, uri: str, headers: str = "", body: bytes = b"") -> str:
        self.cseq += 1
        self.writer.write(rtsp_request(method, uri, self.cseq, headers, body))
        await self.writer.drain()
        head = (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)).decode()
        for line in head.split("\r\n"):
            if line.lower().startswith("content-length:"):
                await self.reader.readexactly(int(line.split(":")[1]))
        return head

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def closed_by_server(self, timeout: float = 5.0) -> bool:
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except ConnectionError:
            return True  # reset: closed too
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.writer.close()


def session_of(reply: str) -> str:
    """The session id of a SETUP reply."""
    return next(
        line.split(":", 1)[1].split(";")[0].strip() for line in reply.split("\r\n") if line.startswith("Session:")
    )


def transport_of(reply: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in reply.split("\r\n") if line.startswith("Transport:"))


# Attacks, one attempt each (mediacore-bench soak runs them in a loop) ---------------------


@dataclass
class Target:
    """A live mediacore server, and the stream the HTTP attacks aim at."""

    rtmp_port: int
    rtsp_port: int
    http_port: int
    stream: str
    clip: Path
    host: str = "127.0.0.1"
    local_host: str = "127.0.0.2"
    """Hostile peers connect from here, so the per-address caps they run into are their own
    and never refuse the honest publishers on 127.0.0.1."""


JUMP_MS = 23_760_000
"""A 6.6 h timestamp jump, the one that used to make 118,800 GAP parts at once."""


async def _closed(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True once the server has closed the connection (EOF or reset) within `timeout`."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except (ConnectionError, asyncio.IncompleteReadError):
        return True
    except TimeoutError:
        return False
    return True


async def attack_timestamp_jump(target: Target, name: str = "soak-jumper") -> str:
    """Publish 4 s of the clip, then the rest 6.6 h later, then leave."""
    publisher = await asyncio.to_thread(HostilePublisher, target.rtmp_port, target.clip, target.host)
    try:
        await publisher.start(name)
        await publisher.send(0, 4000)
        await publisher.send(4000, 10**9, lambda ms: ms + JUMP_MS)
        await publisher.finish(name)
    except (ConnectionError, OSError, TimeoutError):
        return "closed"
    return "sent"


async def attack_control_flood(target: Target, name: str = "soak-flooder") -> str:
    """Publish, then send pings and acknowledgements as fast as the socket takes them."""
    peer = ScriptedPublisher(target.host, target.rtmp_port)
    try:
        await peer.connect(target.local_host)
        await peer.publish(name)
        sent = 0
        for _ in range(5000):
            peer.send(b"".join(ping(peer.chunks, sent + i) for i in range(50)))
            peer.send(peer.chunks.write(2, ACKNOWLEDGEMENT, 0, 0, (sent & 0xFFFFFFFF).to_bytes(4, "big")) * 10)
            sent += 60
            await peer.writer.drain()
            if peer.reader.at_eof():
                break
        return "closed" if await _closed(peer.reader, 5.0) else "not closed"
    except (ConnectionError, OSError):
        return "closed"
    finally:
        await peer.close()


async def attack_deaf_rtmp(target: Target, hold: float = 20.0) -> str:
    """Connect, ask for replies and never read them nor publish: closed at the publish
    deadline, the write cap or the control bound, whichever comes first."""
    peer = ScriptedPublisher(target.host, target.rtmp_port)
    try:
        await peer.connect(target.local_host)
        peer.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peer.send(peer.chunks.write(3, COMMAND_AMF0, 0, 0, amf0.encode("connect", 1.0, {"app": "live"})))
        peer.send(b"".join(ping(peer.chunks, i) for i in range(200)))
        await peer.writer.drain()
        await asyncio.sleep(hold / 2)  # not reading
        return "closed" if await _closed(peer.reader, hold / 2) else "not closed"
    except (ConnectionError, OSError):
        return "closed"
    finally:
        await peer.close()


async def _refused_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, probe: bytes) -> bool:
    try:
        if probe:
            writer.write(probe)
        return await asyncio.wait_for(reader.read(1), 1.0) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def attack_connection_flood(target: Target, protocol: str, count: int = 30) -> str:
    """Open `count` connections from one address at once (past the per-address cap of 20),
    see how many the server refuses at once, then close them all."""
    port = target.rtmp_port if protocol == "rtmp" else target.rtsp_port
    probe = b"" if protocol == "rtmp" else rtsp_request("OPTIONS", "*", 1)
    peers: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(count):
            try:
                peers.append(await asyncio.open_connection(target.host, port, local_addr=(target.local_host, 0)))
            except OSError:
                pass
        refused = await asyncio.gather(*(_refused_at_once(r, w, probe) for r, w in peers))
        return f"{sum(refused)} of {count} refused"
    finally:
        for _, writer in peers:
            writer.close()


async def attack_rtsp_bad_transport(target: Target, name: str = "soak-transport") -> str:
    """ANNOUNCE, then SETUP with Transports the server cannot take (channels past 255, ports
    out of range): each must get 461."""
    base = f"rtsp://{target.host}:{target.rtsp_port}/live/{name}"
    try:
        client = await RtspClient(target.rtsp_port, target.local_host).open()
    except OSError:
        return "refused"
    try:
        await client.call("ANNOUNCE", base, "Content-Type: application/sdp\r\n", FFMPEG_SDP.encode())
        codes = []
        for transport in ("RTP/AVP/TCP;unicast;interleaved=0-300", "RTP/AVP;unicast;client_port=0-70000"):
            reply = await client.call("SETUP", base + "/streamid=0", f"Transport: {transport};mode=record\r\n")
            codes.append(reply.split(" ", 2)[1])
        return "461" if codes == ["461", "461"] else "/".join(codes)
    except (ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError):
        return "closed"
    finally:
        client.close()


async def attack_cache_busting(target: Target, requests: int = 60) -> str:
    """What a client does to get past caches: random query strings on playlists and media,
    directives far ahead, malformed or spelled oddly. Returns the statuses seen."""
    base = f"http://{target.host}:{target.http_port}/live/{target.stream}"
    rng = random.Random()
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(local_addr=(target.local_host, 0))
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for i in range(requests):
            bust = rng.getrandbits(64)
            choice = i % 6
            if choice == 0:
                url = f"{base}/index.m3u8?cb={bust}"
            elif choice == 1:
                url = f"{base}/ll/video.m3u8?_HLS_msn={10**9 + bust % 1000}&_HLS_part=0"
            elif choice == 2:
                url = f"{base}/ll/video.m3u8?_HLS_msn=x{bust}&_HLS_part=-1"
            elif choice == 3:
                url = f"{base}/ll/video.m3u8?_HLS_msn=00{bust % 7}&_HLS_part=0&_HLS_skip=MAYBE&cb={bust}"
            elif choice == 4:
                url = f"{base}/ll/v-{bust % 1000}-{10**6 + bust % 1000}.0.m4s?cb={bust}"
            else:
                url = f"{base}/ll.m3u8?cb={bust}"
            try:
                async with session.get(url) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
            except (aiohttp.ClientError, TimeoutError):
                statuses[0] = statuses.get(0, 0) + 1
    return " ".join(f"{code}x{n}" for code, n in sorted(statuses.items()))


async def attack_slow_reader(target: Target, hold: float = 15.0) -> str:
    """Ask for a segment with a tiny receive buffer and never read it for `hold` seconds."""
    base = f"http://{target.host}:{target.http_port}/live/{target.stream}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"{base}/index.m3u8") as r:
            playlist = await r.text()
    segments = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    if not segments:
        return "no segment"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((target.local_host, 0))
    sock.setblocking(False)
    try:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (target.host, target.http_port))
        path = f"/live/{target.stream}/{segments[-1]}"
        await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: {target.host}\r\n\r\n".encode())
        await asyncio.sleep(hold)
        return "held"
    except OSError:
        return "closed"
    finally:
        sock.close()


ATTACKS: dict[str, Callable[[Target], Awaitable[str]]] = {
    "timestamp jump": attack_timestamp_jump,
    "control flood": attack_control_flood,
    "deaf rtmp peer": attack_deaf_rtmp,
    "rtmp connection flood": lambda t: attack_connection_flood(t, "rtmp"),
    "rtsp connection flood": lambda t: attack_connection_flood(t, "rtsp"),
    "rtsp bad transport": attack_rtsp_bad_transport,
    "cache-busting queries": attack_cache_busting,
    "slow http reader": attack_slow_reader,
}
"""Each kind of hostile peer and the coroutine function that makes one attempt."""
