"""Requests answered by another worker of the same machine (`mediacore serve --workers N`):
where each one goes, and the loopback proxy that carries it there.

Every worker is a full origin; a request for a stream another worker owns is sent, as it
came (method, path, query with `_HLS_msn` / `_HLS_part` / `token`, body, headers), to that
worker's private listener on loopback, and its answer comes back as it went (status,
headers, body; gzip bodies are passed through compressed, large ones streamed). A WebSocket
upgrade is piped both ways. The forwarded request carries `HOP_HEADER`, so it is never
forwarded again (an owner that changed meanwhile answers it itself), and the viewer's
address in X-Forwarded-For.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

HOP_HEADER = "X-Mediacore-Worker-Hop"
"""Marks a request one worker forwarded to another: it is answered where it arrives."""
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        "Date",
        "Server",
    )
)
"""Headers that belong to one connection (RFC 9110 7.6.1) or that aiohttp writes itself."""
WEBSOCKET_HEADERS = frozenset(
    h.lower()
    for h in ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions", "Sec-WebSocket-Accept")
)
BUFFER_UP_TO = 1 << 20
"""Bodies up to this many bytes (playlists, parts, most segments) are read whole and answered
in one write; larger ones, or of unknown length, are streamed through as they arrive."""
CONNECT_TIMEOUT = 2.0
"""Seconds to connect to another worker over loopback: it is up, or it died and is being
restarted (the request then fails with 502 rather than hang)."""
MAX_WS_MESSAGE = 1 << 20
"""Largest WebSocket message piped through (the plugins' own limits are smaller)."""


@dataclass(slots=True)
class WorkerRoutes:
    """Where the other workers are (each worker's engine fills this in)."""

    owner_of: Callable[[str], str | None]
    """Base URL of the other worker that owns a stream (None: this one, or none)."""
    home: Callable[[], str | None]
    """Base URL of the worker that serves the plugins' routes that name no stream (None:
    this worker is it)."""
    peers: Callable[[], Sequence[str]]
    """Base URLs of every other worker."""
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
                connector=aiohttp.TCPConnector(limit=0),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def forwarded(request: web.Request) -> dict[str, str]:
    """The headers to send on: the request's, less the hop-by-hop ones, plus the hop mark and
    the client's address appended to X-Forwarded-For."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | WEBSOCKET_HEADERS}
    previous = request.headers.get("X-Forwarded-For")
    remote = request.remote or "?"
    headers["X-Forwarded-For"] = f"{previous}, {remote}" if previous else remote
    headers[HOP_HEADER] = "1"
    return headers


async def forward(request: web.Request, base: str, routes: WorkerRoutes) -> web.StreamResponse:
    """Answer `request` with what the worker at `base` answers to it."""
    url = base.rstrip("/") + request.raw_path
    headers = forwarded(request)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _pipe_websocket(request, url, headers, routes)
    body = await request.read() if request.can_read_body else None
    try:
        upstream = await routes.session().request(
            request.method, url, headers=headers, data=body, allow_redirects=False
        )
    except (aiohttp.ClientError, OSError) as e:
        raise web.HTTPBadGateway(text=f"the worker serving this stream did not answer: {e!r}") from e
    try:
        kept = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP]
        length = upstream.content_length
        if length is not None and length <= BUFFER_UP_TO:
            response = web.Response(status=upstream.status, reason=upstream.reason, body=await upstream.read())
            response.headers.extend(kept)
            return response
        streamed = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        streamed.headers.extend(kept)
        if length is not None:
            streamed.content_length = length
        await streamed.prepare(request)
        async for chunk in upstream.content.iter_any():
            await streamed.write(chunk)
        await streamed.write_eof()
        return streamed
    finally:
        upstream.release()


async def _pipe_websocket(
    request: web.Request, url: str, headers: dict[str, str], routes: WorkerRoutes
) -> web.StreamResponse:
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    headers.pop("Sec-WebSocket-Protocol", None)
    try:
        upstream = await routes.session().ws_connect(
            url, headers=headers, protocols=protocols, autoping=False, max_msg_size=MAX_WS_MESSAGE
        )
    except aiohttp.WSServerHandshakeError as e:
        return web.Response(status=e.status, text=e.message, headers={"Cache-Control": "no-store"})
    except (aiohttp.ClientError, OSError) as e:
        raise web.HTTPBadGateway(text=f"the worker serving this stream did not answer: {e!r}") from e
    downstream = web.WebSocketResponse(
        protocols=[upstream.protocol] if upstream.protocol else (), autoping=False, max_msg_size=MAX_WS_MESSAGE
    )
    await downstream.prepare(request)

    async def pump(
        source: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
        sink: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
    ) -> None:
        async for message in source:
            if message.type is aiohttp.WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type is aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            elif message.type is aiohttp.WSMsgType.PING:
                await sink.ping(message.data)
            elif message.type is aiohttp.WSMsgType.PONG:
                await sink.pong(message.data)
        await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)

    tasks = [asyncio.ensure_future(pump(upstream, downstream)), asyncio.ensure_future(pump(downstream, upstream))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
        await downstream.close()
    return downstream


async def gather_lists(routes: WorkerRoutes, path: str) -> list[object]:
    """The JSON lists every other worker answers at `path` (a worker that does not answer
    contributes nothing)."""

    async def one(base: str) -> list[object]:
        try:
            async with routes.session().get(base.rstrip("/") + path, headers={HOP_HEADER: "1"}) as r:
                if r.status != 200:
                    return []
                found = json.loads(await r.read())
                return found if isinstance(found, list) else []
        except (aiohttp.ClientError, OSError, ValueError):
            return []

    lists: Sequence[Awaitable[list[object]]] = [one(base) for base in routes.peers()]
    return [item for found in await asyncio.gather(*lists) for item in found]
