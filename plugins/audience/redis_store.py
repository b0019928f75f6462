"""The multi-node event store: every node XADDs its events to one Redis Stream; a consumer
group (one consumer per node) applies them to the canonical log, at least once and
idempotently by event id (one Lua script: the id is stored with HSETNX, so a redelivered or
re-sent event changes nothing); every applied event is also appended to a second stream that
every node's recommender tails, so each node's models see each event once.

Keys under prefix P (default `mediacore:audience:`): `P in` (ingest stream, fields `u` user
and `e` event JSON), group `P in` / `store`; `P ev` (hash id → event JSON), `P log` (sorted
set of ids by ts), `P user:USER` (set of the user's ids), `P applied` (stream of applied
events, field `e`), `P segments` (hash user → segment: model rows). USER is a pseudonym (hex), so keys
are unambiguous. For Redis Cluster give the prefix a hash tag (`{audience}:`)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from . import limits
from .events import Event

DEFAULT_PREFIX = "mediacore:audience:"
GROUP = "store"

APPLY = """
local n = 0
for i = 1, #ARGV - 1, 3 do
  local id, json, ts = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HSETNX', KEYS[1], id, json) == 1 then
    redis.call('ZADD', KEYS[2], ts, id)
    redis.call('SADD', KEYS[4 + (i - 1) / 3], id)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[#ARGV], '*', 'e', json)
    n = n + 1
  end
end
return n
"""
# ARGV: (id, json, ts) per event, then the applied stream's MAXLEN.


class RedisEventStore:
    def __init__(self, client: aioredis.Redis, prefix: str = DEFAULT_PREFIX, consumer: str = "node") -> None:
        self.client: Any = client  # redis-py's reply types are unions of every RESP shape
        self.prefix = prefix
        self.consumer = consumer
        self.ingest = prefix + "in"
        self.ev = prefix + "ev"
        self.log = prefix + "log"
        self.applied_stream = prefix + "applied"
        self.segments = prefix + "segments"
        self._apply = client.register_script(APPLY)
        self._pending_done = False
        self.applied = 0
        """Events this node's consumer applied (new ids) since start."""

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, consumer: str = "node") -> RedisEventStore:
        return cls(aioredis.Redis.from_url(url, decode_responses=False), prefix, consumer)

    def user_key(self, user: str) -> str:
        return f"{self.prefix}user:{user}"

    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(self.ingest, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def append(self, events: list[Event]) -> list[Event]:
        async with self.client.pipeline(transaction=False) as pipe:
            for e in events:
                pipe.xadd(self.ingest, {"u": e.user, "e": e.to_json()}, maxlen=limits.STREAM_MAXLEN, approximate=True)
            await pipe.execute()
        return []

    # The consumer group: at least once, idempotent by id --------------------------------
    async def consume(self, block_ms: int = limits.REDIS_BLOCK_MS) -> int:
        """Read a batch for this consumer (first its own pending entries, left by a crash
        before XACK; then entries idle too long at a dead consumer; then new ones), apply it,
        acknowledge it. Returns the events newly applied."""
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        if not self._pending_done:
            reply = await self.client.xreadgroup(GROUP, self.consumer, {self.ingest: "0"}, count=limits.REDIS_BATCH)
            entries = reply[0][1] if reply else []
            if not entries:
                self._pending_done = True
        if not entries:
            claimed = await self.client.xautoclaim(
                self.ingest, GROUP, self.consumer, limits.CLAIM_IDLE_MS, "0-0", count=limits.REDIS_BATCH
            )
            entries = [e for e in claimed[1] if e and e[1]]
        if not entries:
            reply = await self.client.xreadgroup(
                GROUP, self.consumer, {self.ingest: ">"}, count=limits.REDIS_BATCH, block=block_ms
            )
            entries = reply[0][1] if reply else []
        if not entries:
            return 0
        n = await self.apply([Event.from_json(fields[b"e"]) for _, fields in entries if b"e" in fields])
        await self.client.xack(self.ingest, GROUP, *[entry_id for entry_id, _ in entries])
        return n

    async def apply(self, events: list[Event]) -> int:
        """Store `events` in the canonical log (ids already there are skipped)."""
        if not events:
            return 0
        keys = [self.ev, self.log, self.applied_stream] + [self.user_key(e.user) for e in events]
        args: list[Any] = []
        for e in events:
            args += [e.id, e.to_json(), repr(e.ts)]
        args.append(limits.STREAM_MAXLEN)
        n = int(await self._apply(keys=keys, args=args))
        self.applied += n
        return n

    async def tail(self, last_id: str, block_ms: int = limits.REDIS_BLOCK_MS) -> tuple[str, list[Event]]:
        """Applied events after `last_id` (every node reads all): (new last id, events)."""
        reply = await self.client.xread({self.applied_stream: last_id}, count=limits.REDIS_BATCH, block=block_ms)
        if not reply:
            return last_id, []
        entries = reply[0][1]
        return entries[-1][0].decode(), [Event.from_json(fields[b"e"]) for _, fields in entries]

    async def last_applied_id(self) -> str:
        reply = await self.client.xrevrange(self.applied_stream, count=1)
        return reply[0][0].decode() if reply else "0-0"

    # Reads, deletion, retention ------------------------------------------------------------
    async def load(self, since: float) -> list[Event]:
        ids = await self.client.zrangebyscore(self.log, since, "+inf")
        events: list[Event] = []
        for i in range(0, len(ids), 1000):
            raw = await self.client.hmget(self.ev, ids[i : i + 1000])
            events += [Event.from_json(r) for r in raw if r is not None]
        return events

    @staticmethod
    def _owner(fields: dict[bytes, bytes]) -> str:
        if b"u" in fields:
            return fields[b"u"].decode()
        return Event.from_json(fields[b"e"]).user if b"e" in fields else ""

    async def _drop_from_stream(self, stream: str, user: str) -> None:
        """XDEL the entries of `user` from `stream` (scanned in pages; bounded by its MAXLEN)."""
        start = "-"
        while True:
            page = await self.client.xrange(stream, start, "+", count=1000)
            if not page:
                return
            doomed = [entry_id for entry_id, fields in page if self._owner(fields) == user]
            if doomed:
                await self.client.xdel(stream, *doomed)
            if len(page) < 1000:
                return
            start = "(" + page[-1][0].decode()

    async def delete_user(self, user: str) -> int:
        ids: set[bytes] = await self.client.smembers(self.user_key(user))
        if ids:
            await self.client.hdel(self.ev, *ids)
            await self.client.zrem(self.log, *ids)
        await self.client.delete(self.user_key(user))
        await self.client.hdel(self.segments, user)
        await self._drop_from_stream(self.ingest, user)
        await self._drop_from_stream(self.applied_stream, user)
        return len(ids)

    async def purge(self, before: float) -> int:
        ids = await self.client.zrangebyscore(self.log, "-inf", f"({before!r}")
        for i in range(0, len(ids), 1000):
            chunk = ids[i : i + 1000]
            raw = await self.client.hmget(self.ev, chunk)
            async with self.client.pipeline(transaction=False) as pipe:
                for event_id, r in zip(chunk, raw):
                    if r is not None:
                        pipe.srem(self.user_key(Event.from_json(r).user), event_id)
                pipe.hdel(self.ev, *chunk)
                pipe.zrem(self.log, *chunk)
                await pipe.execute()
        minid = f"{int(before * 1000)}-0"
        for stream in (self.ingest, self.applied_stream):
            await self.client.xtrim(stream, minid=minid, approximate=False)
        return len(ids)

    async def save_segments(self, segments: dict[str, int]) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.segments)
            if segments:
                pipe.hset(self.segments, mapping={k: str(v) for k, v in segments.items()})
            await pipe.execute()

    async def count(self, user: str | None = None) -> int:
        if user is None:
            return int(await self.client.zcard(self.log))
        n = int(await self.client.scard(self.user_key(user)))
        n += int(await self.client.hexists(self.segments, user))
        for stream in (self.ingest, self.applied_stream):
            for _, fields in await self.client.xrange(stream, "-", "+"):
                n += self._owner(fields) == user
        return n

    async def close(self) -> None:
        await self.client.aclose()
