"""A minimal RTSP client for tests: requests one at a time, raw bytes when a test needs to
misbehave, and the helpers the hostile-peer tests share."""

from __future__ import annotations

import asyncio
import socket

from test_rtsp_core import request


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
        self.writer.write(request(method, uri, self.cseq, headers, body))
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
