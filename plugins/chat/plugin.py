"""The chat plugin's shell: the aiohttp WebSocket handler `GET /live/{stream}/chat`, one writer
task per connection draining its send queue, and one ticker per node (likes and viewer
totals, slow connections). The decisions live in the sans-I/O modules beside it: protocol
(frames ↔ commands), service (checks and publishing), sendqueue (classes and shedding),
fanout (a room on this node), rate, text_policy, review, and the bus (bus / redis_bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client import Counter, Gauge

from mediacore.plugins.api import IdentityError, PluginContext, PluginError, Role

from . import limits
from .bus import Bus, BusUnavailable, Event, MemoryBus
from .fanout import LocalRoom, outgoing
from .protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY,
    CLOSE_TOO_SLOW,
    CLOSE_TRY_LATER,
    MSGPACK_PROTOCOL,
    BadMessage,
    Codec,
    ProtocolViolation,
    error,
    parse_command,
)
from .review import ReviewHook
from .sendqueue import Outgoing, SendQueue
from .service import RoomService, Sender, visible_history
from .settings import ChatSettings
from .text_policy import WordFilter

log = logging.getLogger("plugins.chat")

_ROOM = re.compile(limits.ROOM_NAME)


class Connection:
    """One client's WebSocket: its queue, its writer task, and how it is closed."""

    def __init__(
        self, plugin: ChatPlugin, ws: web.WebSocketResponse, request: web.Request, room: str, sender: Sender
    ) -> None:
        self.plugin = plugin
        self.ws = ws
        self.request = request
        self.room = room
        self.sender = sender
        self.binary = ws.ws_protocol == MSGPACK_PROTOCOL
        s = plugin.settings
        self.queue = SendQueue(s.send_queue, s.urgent_queue, plugin.context.clock())
        self.floor = 0
        """Live events at or below this seq were already sent (history or replay)."""
        self.wake = asyncio.Event()
        self.closing = False
        self.writer: asyncio.Task[None] | None = None

    def offer(self, item: Outgoing) -> None:
        if self.closing:
            return
        if item.event.get("type") == "delete":
            self.queue.cancel_chat(str(item.event.get("id")))
        if not self.queue.push(item, self.plugin.context.clock()):
            self.close_slow(f"too slow: more than {self.queue.urgent_limit} gifts and moderation events queued")
            return
        self.wake.set()

    async def send_now(self, event: Event) -> None:
        item = outgoing(event)
        await self._send(item)

    async def _send(self, item: Outgoing) -> None:
        frame = item.frame(self.binary)
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    async def write(self) -> None:
        clock = self.plugin.context.clock
        while not self.closing:
            item = self.queue.pop(clock())
            if item is None:
                self.wake.clear()
                await self.wake.wait()
                continue
            if 0 < item.seq <= self.floor:
                continue
            await self._send(item)
            self.plugin.sent.inc()

    def close_slow(self, reason: str) -> None:
        if self.closing:
            return
        self.plugin.closed_slow.inc()
        self.plugin.shed.inc(self.queue.shed)
        self.queue.shed = 0
        log.info("chat: closing a slow client in room %s (%s)", self.room, reason)
        self.plugin.spawn(self.close(CLOSE_TOO_SLOW, reason))

    async def close(self, code: int, reason: str) -> None:
        self.closing = True
        if self.writer is not None:
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.writer
        try:
            # The close frame goes behind what is already buffered; aiohttp then waits
            # CLOSE_TIMEOUT for the client's answer and closes the transport (which still
            # flushes the close frame to a client that reads late).
            async with asyncio.timeout(2 * limits.CLOSE_TIMEOUT):
                await self.ws.close(code=code, message=reason.encode()[:120], drain=False)
        except (TimeoutError, ConnectionError, RuntimeError):
            if self.request.transport is not None:
                self.request.transport.close()


class ChatPlugin:
    name = "chat"

    def __init__(self) -> None:
        self.rooms: dict[str, LocalRoom] = {}
        self.connections: set[Connection] = set()
        self.per_address: dict[str, int] = {}
        self.hls_viewers: dict[str, set[str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._rooms_lock = asyncio.Lock()
        self._in_use = asyncio.Event()

    async def start(self, context: PluginContext) -> None:
        self.context = context
        self.settings = s = ChatSettings.parse(context.settings)
        self.bus: Bus
        if s.redis_url:
            from .redis_bus import RedisBus

            self.bus = RedisBus(s.redis_url, s.redis_prefix, s.history_keep)
        else:
            self.bus = MemoryBus(s.history_keep)
        try:
            await self.bus.start()
        except Exception as e:
            raise PluginError(f"chat: cannot reach {s.redis_url}: {e}") from e
        self.review = (
            ReviewHook(s.review_hook, s.review_timeout, s.review_fallback == "allow") if s.review_hook else None
        )
        self.service = RoomService(
            s, self.bus, WordFilter(max_length=s.max_text), self.review, context.wall_clock, self._add_likes
        )
        r = context.registry
        self.connected = Gauge("mediacore_chat_connections", "open chat WebSocket connections", registry=r)
        self.sent = Counter("mediacore_chat_frames_sent", "chat frames written to clients", registry=r)
        self.shed = Counter("mediacore_chat_shed", "chat messages given up for slow clients", registry=r)
        self.closed_slow = Counter("mediacore_chat_slow_closed", "clients closed for not keeping up", registry=r)
        self.refused = Counter("mediacore_chat_refused", "client commands refused", ["code"], registry=r)
        self.rejected = Counter("mediacore_chat_rejected", "connections closed for bad input", ["code"], registry=r)
        context.add_page_script("chat.js", Path(__file__).parent / "static" / "chat.js")
        context.add_websocket("/live/{stream}/chat", self.handle)
        context.on_viewer_joined(self._viewer_joined)
        context.on_viewer_left(self._viewer_left)
        self._ticker = asyncio.create_task(self._tick_forever(), name="chat-ticker")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await asyncio.gather(*(c.close(CLOSE_GOING_AWAY, "server stopping") for c in list(self.connections)))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bus.close()
        if self.review is not None:
            await self.review.close()

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # viewers -------------------------------------------------------------------------------

    def _viewer_joined(self, stream: str, viewer: str) -> None:
        self.hls_viewers.setdefault(stream, set()).add(viewer)

    def _viewer_left(self, stream: str, viewer: str) -> None:
        viewers = self.hls_viewers.get(stream)
        if viewers is not None:
            viewers.discard(viewer)
            if not viewers:
                del self.hls_viewers[stream]

    def local_viewers(self, room: LocalRoom) -> int:
        """This node's viewers of the room: its chat connections or its HLS players, whichever
        is more (most viewers have both; some only watch, a few only chat)."""
        return max(len(room.receivers), len(self.hls_viewers.get(room.name, ())))

    def _add_likes(self, room: str, count: int) -> None:
        local = self.rooms.get(room)
        if local is not None:
            local.pending_likes += count

    # rooms ---------------------------------------------------------------------------------

    async def _join(self, conn: Connection) -> LocalRoom:
        async with self._rooms_lock:
            room = self.rooms.get(conn.room)
            if room is None:
                room = LocalRoom(conn.room)
                await self.bus.subscribe(conn.room, room.deliver)
                self.rooms[conn.room] = room
            room.receivers.add(conn)
            return room

    async def _tick_forever(self) -> None:
        """Tick while this node has a chat connection or a room to let go of; an idle node's
        loop then sleeps instead of waking ten times a second for nothing."""
        while True:
            if not self.connections and not self.rooms:
                self._in_use.clear()
                await self._in_use.wait()
            await asyncio.sleep(limits.TICK_SECONDS)
            try:
                await self.tick()
            except Exception as e:
                log.error("chat: tick failed: %r", e, exc_info=e)

    async def tick(self) -> None:
        """Send each room's likes and viewer totals where they changed, close stalled clients,
        and let go of rooms nobody here is in."""
        now = self.context.clock()
        for conn in list(self.connections):
            if conn.queue.stalled(now, self.settings.stall_timeout):
                conn.close_slow(f"too slow: nothing read for {self.settings.stall_timeout:g} s")
        for name, room in list(self.rooms.items()):
            likes, room.pending_likes = room.pending_likes, 0
            try:
                total, viewers = await self.bus.tick(name, likes, self.local_viewers(room), self.context.wall_clock())
            except BusUnavailable:
                room.pending_likes += likes
                continue
            room.broadcast(room.totals(total, viewers))
            if not room.receivers and not room.pending_likes:
                async with self._rooms_lock:
                    if not room.receivers and self.rooms.get(name) is room:
                        del self.rooms[name]
                        await self.bus.unsubscribe(name)

    # the WebSocket -------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["stream"]
        if not _ROOM.fullmatch(name):
            raise web.HTTPNotFound(text="no such room")
        s = self.settings
        ws = web.WebSocketResponse(
            protocols=(MSGPACK_PROTOCOL,),
            max_msg_size=s.max_frame,
            heartbeat=limits.HEARTBEAT,
            timeout=limits.CLOSE_TIMEOUT,
            compress=False,  # per-connection deflate of every fanned-out frame costs more CPU than it saves
        )
        await ws.prepare(request)
        sock = request.transport.get_extra_info("socket") if request.transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.SOCKET_SEND_BUFFER)
        address = self.context.client_key(request)
        if self.per_address.get(address, 0) >= s.max_connections_per_address:
            self.rejected.labels("too_many").inc()
            await ws.close(code=CLOSE_TRY_LATER, message=b"too many connections from your address")
            return ws
        try:
            who = self.context.identity(request)
        except IdentityError as e:
            self.rejected.labels("token").inc()
            await ws.close(code=CLOSE_POLICY, message=f"unauthorized: {e}".encode()[:120])
            return ws
        if who is None:
            guest = hashlib.sha256(address.encode()).hexdigest()[:10]
            sender = Sender(f"guest-{guest}", False, s.guests_may_write)
        else:
            sender = Sender(who.sub, who.may(Role.MODERATOR), True)
        self.per_address[address] = self.per_address.get(address, 0) + 1
        conn = Connection(self, ws, request, name, sender)
        self.connections.add(conn)
        self._in_use.set()
        self.connected.inc()
        room: LocalRoom | None = None
        try:
            try:
                room = await self._join(conn)
                await self._greet(conn, room, request.query.get("since"))
            except BusUnavailable:
                await ws.close(code=CLOSE_TRY_LATER, message=b"chat unavailable, try again")
                return ws
            conn.writer = asyncio.create_task(conn.write(), name="chat-writer")
            await self._read(conn)
        finally:
            conn.closing = True
            if room is not None:
                room.receivers.discard(conn)
            self.connections.discard(conn)
            self.connected.dec()
            left = self.per_address[address] - 1
            if left:
                self.per_address[address] = left
            else:
                del self.per_address[address]
            if conn.writer is not None:
                conn.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await conn.writer
            self.shed.inc(conn.queue.shed)
        return ws

    async def _greet(self, conn: Connection, room: LocalRoom, since: str | None) -> None:
        """History (or what a reconnecting client missed), then the room's state."""
        replay = None
        if since is not None and since.isdigit():
            replay = await self.bus.since(room.name, int(since), limits.REPLAY_MAX)
            if replay is None:
                await conn.send_now({"type": "reset"})
            else:
                conn.floor = replay[-1]["seq"] if replay else int(since)
                for event in replay:
                    await conn.send_now(event)
        if replay is None:
            events, last = await self.bus.recent(room.name, limits.HISTORY_SCAN)
            conn.floor = last
            await conn.send_now({"type": "history", "messages": visible_history(events, limits.HISTORY_ON_JOIN)})
        state = await self.bus.state(room.name, ["slow_mode", "pin"])
        if state.get("slow_mode"):
            seconds = float(state["slow_mode"])
            await conn.send_now({"type": "slow_mode", "seconds": int(seconds) if seconds.is_integer() else seconds})
        if state.get("pin"):
            await conn.send_now({"type": "pin", "id": state["pin"]})
        for item in (room.likes, room.viewers):
            if item is not None:
                conn.offer(item)

    async def _read(self, conn: Connection) -> None:
        ws = conn.ws
        codec = Codec(conn.binary)
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            try:
                command = parse_command(codec.decode(msg.data))
            except ProtocolViolation as e:
                self.rejected.labels(str(e.code)).inc()
                conn.closing = True
                await conn.close(e.code, e.reason)
                return
            except BadMessage as e:
                self.refused.labels(e.code).inc()
                conn.offer(outgoing(error(e.code, detail=e.detail)))
                continue
            answer = await self.service.handle(conn.room, conn.sender, command)
            if answer is not None:
                self.refused.labels(answer["code"]).inc()
                conn.offer(outgoing(answer))
        if ws.close_code is not None and ws.close_code != 1000:
            self.rejected.labels(str(ws.close_code)).inc()
