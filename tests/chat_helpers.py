"""Helpers of the chat tests: an engine with the chat plugin, tokens, and a client that
collects what a room sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from mediacore.access.identity import Role, issue
from mediacore.app.config import Config
from mediacore.app.engine import Engine

SECRET = "a-shared-secret-of-at-least-32-bytes!!"


def token(engine: Engine, sub: str, role: Role = Role.VIEWER) -> str:
    return issue(SECRET.encode(), sub, role, 3600, engine.wall_clock())


@asynccontextmanager
async def chat_engine(config: Config, **chat: Any) -> AsyncIterator[Engine]:
    config.auth.jwt_secret = SECRET
    config.plugins.enabled = ["chat"]
    config.plugin_settings["chat"] = dict(chat)
    engine = Engine(config)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


class Client:
    """One WebSocket client of a room; `events` holds every event it received, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.events.append(msg.json())

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def greeted(self, timeout: float = 10.0) -> None:
        """Wait for the room's greeting (`history`, or `reset`): the server has joined this
        client to the room, so what is published from now on reaches it as live events."""
        async with asyncio.timeout(timeout):
            while not (self.of("history") or self.of("reset")):
                if self.task.done():
                    raise AssertionError(f"the room closed the connection before greeting it: {self.events}")
                await asyncio.sleep(0.01)

    async def send(self, **message: Any) -> None:
        await self.ws.send_json(message)

    async def close(self) -> None:
        await self.ws.close()
        await self.task


async def joined(http: aiohttp.ClientSession, url: str) -> Client:
    """A client of the room at `url` (no `since`), returned once the room has greeted it."""
    client = Client(await http.ws_connect(url))
    await client.greeted()
    return client


def chat_url(engine: Engine, room: str, access_token: str | None = None, since: int | None = None) -> str:
    query = []
    if access_token:
        query.append(f"access_token={access_token}")
    if since is not None:
        query.append(f"since={since}")
    return f"http://127.0.0.1:{engine.http_port}/live/{room}/chat" + ("?" + "&".join(query) if query else "")
