"""The room bus on one Redis, shared by every node (`[chat] redis_url`).

Keys, under the prefix P (default `mediacore:chat:`), per room R:
`P R:seq` (the last seq, INCR), `P R:log` (a Stream whose entry ids are `SEQ-0`, field `e` the
event as JSON; trimmed to about `history_keep`), `P R:state` (hash: `slow_mode`, `pin`,
`ban:USER` → until, 0 for ever), `P R:likes` (the total), `P R:viewers` (hash node →
"count:time"); and `P bucket:KEY` (hash: tokens, updated) per rate-limit bucket.

- Publishing is one Lua script: INCR the seq, XADD the event with that seq as its id, set the
  state fields: every node sees one order and one seq per event.
- Each node reads a room with XREAD BLOCK from the last id it delivered, one reader task per
  room it has clients in; the publishing node hears its own events the same way, so each
  event reaches a node's listener once.
- Redis down: publishing refuses (BusUnavailable); readers retry every BUS_RETRY_MIN..MAX
  seconds and resume from the last id they delivered, so nothing is delivered twice. If Redis
  lost its data (restarted without persistence), the seq would start again at 1: the publish
  script takes a floor (the highest seq this node delivered) and never hands out a seq at or
  below it, so readers' positions stay valid.
- The token bucket is the same arithmetic as rate.take, in Lua, with the caller's wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any, cast

import redis.asyncio as aioredis
import redis.exceptions

from . import limits
from .bus import BusUnavailable, Event, Listener

log = logging.getLogger("plugins.chat")

MAX_CONNECTIONS = 64
"""Connections one node opens to Redis (one blocked reader per room with clients, plus the
commands): commands beyond it wait for a free one."""

SOCKET_TIMEOUT = 5.0
"""Seconds a command may wait for Redis's answer (XREAD BLOCK adds its own block time)."""

CONNECT_TIMEOUT = 1.0
"""Seconds to open a connection: a dead Redis is noticed quickly."""

PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[2])
if seq <= floor then
  seq = floor + 1
  redis.call('SET', KEYS[1], seq)
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], seq .. '-0', 'e', ARGV[3])
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[3], ARGV[i])
  else
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  end
end
return seq
"""

TAKE = """
local capacity = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local rate = capacity / period
local b = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(b[1])
local updated = tonumber(b[2])
if tokens == nil or updated == nil then
  tokens = capacity
  updated = now
end
tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
local retry = 0
if tokens >= 1 - 1e-9 then
  tokens = math.max(0, tokens - 1)
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'u', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(period * 2000))
return string.format('%.17g', retry)
"""

TICK = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
local now = tonumber(ARGV[4])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. ':' .. ARGV[4])
local sum = 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local count, at = string.match(all[i + 1], '^(%d+):(.+)$')
  if count and tonumber(at) >= now - tonumber(ARGV[5]) then
    sum = sum + tonumber(count)
  else
    redis.call('HDEL', KEYS[2], all[i])
  end
end
return {total, sum}
"""

_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def _event(entry_id: bytes | str, fields: Mapping[Any, Any]) -> Event:
    raw = fields.get(b"e", fields.get("e"))
    event: Event = json.loads(raw)
    event["seq"] = _seq(entry_id)
    return event


class RedisBus:
    def __init__(self, url: str, prefix: str, keep: int) -> None:
        self.url = url
        self.prefix = prefix
        self.keep = keep
        self.node = uuid.uuid4().hex[:12]
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            socket_timeout=SOCKET_TIMEOUT + limits.BUS_BLOCK_MS / 1000,
            socket_connect_timeout=CONNECT_TIMEOUT,
        )
        self._publish = self.redis.register_script(PUBLISH)
        self._take = self.redis.register_script(TAKE)
        self._tick = self.redis.register_script(TICK)
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._delivered: dict[str, int] = {}
        """The highest seq delivered to this node's listener, per room."""
        self.reconnects = 0

    def _key(self, room: str, what: str) -> str:
        return f"{self.prefix}{room}:{what}"

    async def start(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        for room in list(self._readers):
            await self.unsubscribe(room)
        await self.redis.aclose()

    async def publish(self, room: str, event: Event, state: Mapping[str, str] | None = None) -> int:
        args: list[str | int] = [self.keep, self._delivered.get(room, 0), json.dumps(event, separators=(",", ":"))]
        for field, value in (state or {}).items():
            args += [field, value]
        keys = [self._key(room, "seq"), self._key(room, "log"), self._key(room, "state")]
        try:
            return int(await self._publish(keys=keys, args=args))
        except _DOWN as e:
            raise BusUnavailable(str(e)) from e

    async def recent(self, room: str, scan: int) -> tuple[list[Event], int]:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xrevrange(self._key(room, "log"), "+", "-", count=scan)
                pipe.get(self._key(room, "seq"))
                entries, last = await pipe.execute()
        except _DOWN as e:
            raise BusUnavailable(str(e)) from e
        events = [_event(i, f) for i, f in reversed(entries)]
        return events, max(int(last or 0), events[-1]["seq"] if events else 0)

    async def since(self, room: str, seq: int, limit: int) -> list[Event] | None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xrange(self._key(room, "log"), f"({seq}-0", "+", count=limit + 1)
                pipe.get(self._key(room, "seq"))
                entries, last = await pipe.execute()
        except _DOWN as e:
            raise BusUnavailable(str(e)) from e
        events = [_event(i, f) for i, f in entries]
        last_seq = max(int(last or 0), events[-1]["seq"] if events else 0)
        if seq > last_seq or len(events) > limit:
            return None
        if events and events[0]["seq"] != seq + 1:
            return None
        if not events and last_seq > seq:
            return None
        return events

    async def state(self, room: str, fields: list[str]) -> dict[str, str]:
        try:
            values = await self.redis.hmget(self._key(room, "state"), fields)
        except _DOWN as e:
            raise BusUnavailable(str(e)) from e
        return {f: v.decode() if isinstance(v, bytes) else str(v) for f, v in zip(fields, values) if v is not None}

    async def take(self, key: str, now: float, capacity: int, period: float) -> float:
        try:
            retry = await self._take(keys=[f"{self.prefix}bucket:{key}"], args=[capacity, repr(period), repr(now)])
        except _DOWN as e:
            raise BusUnavailable(str(e)) from e
        return float(retry)

    async def tick(self, room: str, likes: int, viewers: int, now: float) -> tuple[int, int]:
        keys = [self._key(room, "likes"), self._key(room, "viewers")]
        try:
            total, count = await self._tick(
                keys=keys, args=[likes, self.node, viewers, repr(now), repr(limits.VIEWER_STALE)]
            )
        except _DOWN as e:
            raise BusUnavailable(str(e)) from e
        return int(total), int(count)

    async def subscribe(self, room: str, listener: Listener) -> None:
        if room in self._readers:
            return
        try:
            newest: Any = await self.redis.xrevrange(self._key(room, "log"), "+", "-", count=1)
            seq = int(cast(Any, await self.redis.get(self._key(room, "seq"))) or 0)
        except _DOWN as e:
            raise BusUnavailable(str(e)) from e
        start = max(seq, _seq(newest[0][0]) if newest else 0)
        self._delivered[room] = start
        self._readers[room] = asyncio.create_task(self._read(room, listener), name=f"chat-reader-{room}")

    async def unsubscribe(self, room: str) -> None:
        task = self._readers.pop(room, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._delivered.pop(room, None)

    async def _read(self, room: str, listener: Listener) -> None:
        key = self._key(room, "log")
        pause = limits.BUS_RETRY_MIN
        down = False
        while True:
            try:
                reply: Any = await self.redis.xread(
                    {key: f"{self._delivered[room]}-0"}, count=500, block=limits.BUS_BLOCK_MS
                )
            except _DOWN as e:
                if not down:
                    log.warning("chat: Redis unreachable for room %s (%r); retrying", room, e)
                    down = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, limits.BUS_RETRY_MAX)
                continue
            if down:
                down = False
                self.reconnects += 1
                pause = limits.BUS_RETRY_MIN
                log.warning(
                    "chat: Redis reachable again for room %s, resuming after seq %d", room, self._delivered[room]
                )
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    seq = _seq(entry_id)
                    if seq <= self._delivered[room]:
                        continue
                    self._delivered[room] = seq
                    try:
                        listener(_event(entry_id, fields))
                    except Exception as e:  # a listener bug must not stop the room
                        log.error("chat: listener failed for room %s: %r", room, e, exc_info=e)
