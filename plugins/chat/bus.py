"""The room bus: where a room's events get their `seq`, are kept for history and `?since=`
replay, and reach every node that has clients in the room; it also holds the room's shared
state (slow mode, bans, the pinned message), the likes total and the rate-limit buckets.

Two implementations behind one interface: `MemoryBus` (one process, the default) and
`RedisBus` (plugins/chat/redis_bus.py, `[chat] redis_url`: every node attached to one Redis).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .rate import Buckets

Event = dict[str, Any]
Listener = Callable[[Event], None]
"""Called with each event of a room (with its `seq`), in seq order, once per node."""


class BusUnavailable(Exception):
    """The bus cannot be reached (Redis down): the command is refused, try again later."""


class Bus(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, room: str, event: Event, state: Mapping[str, str] | None = None) -> int:
        """Give `event` the room's next seq, keep it, set the room's `state` fields (an empty
        value removes a field) in the same step, and deliver it to every node's listener.
        Returns the seq."""
        ...

    async def recent(self, room: str, scan: int) -> tuple[list[Event], int]:
        """The room's newest `scan` events, oldest first, and the room's last seq."""
        ...

    async def since(self, room: str, seq: int, limit: int) -> list[Event] | None:
        """The events after `seq`, oldest first; None when some of them are gone (trimmed,
        lost) or there are more than `limit`: the client needs a reset."""
        ...

    async def state(self, room: str, fields: list[str]) -> dict[str, str]:
        """The room's state fields that are set."""
        ...

    async def take(self, key: str, now: float, capacity: int, period: float) -> float:
        """One token from the bucket `key` (see rate.take): 0.0, or seconds to wait."""
        ...

    async def tick(self, room: str, likes: int, viewers: int, now: float) -> tuple[int, int]:
        """Add this node's new likes, report its viewer count; the room's likes total and
        viewer count over every node."""
        ...

    async def subscribe(self, room: str, listener: Listener) -> None:
        """Deliver the room's events published from now on to `listener` (one per room)."""
        ...

    async def unsubscribe(self, room: str) -> None: ...


class _MemoryRoom:
    def __init__(self, keep: int) -> None:
        self.seq = 0
        self.log: deque[Event] = deque(maxlen=keep)
        self.state: dict[str, str] = {}
        self.likes = 0
        self.listener: Listener | None = None


class MemoryBus:
    """Rooms in this process only: publish delivers synchronously, in seq order."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._rooms: dict[str, _MemoryRoom] = {}
        self._buckets = Buckets()

    def _room(self, room: str) -> _MemoryRoom:
        found = self._rooms.get(room)
        if found is None:
            found = self._rooms[room] = _MemoryRoom(self.keep)
        return found

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._rooms.clear()

    async def publish(self, room: str, event: Event, state: Mapping[str, str] | None = None) -> int:
        r = self._room(room)
        r.seq += 1
        stored = dict(event, seq=r.seq)
        r.log.append(stored)
        for field, value in (state or {}).items():
            if value:
                r.state[field] = value
            else:
                r.state.pop(field, None)
        if r.listener is not None:
            r.listener(stored)
        return r.seq

    async def recent(self, room: str, scan: int) -> tuple[list[Event], int]:
        r = self._room(room)
        return list(r.log)[-scan:], r.seq

    async def since(self, room: str, seq: int, limit: int) -> list[Event] | None:
        r = self._room(room)
        if seq > r.seq or r.seq - seq > limit:
            return None
        if seq == r.seq:
            return []
        if not r.log or r.log[0]["seq"] > seq + 1:
            return None
        return [e for e in r.log if e["seq"] > seq]

    async def state(self, room: str, fields: list[str]) -> dict[str, str]:
        r = self._room(room)
        return {f: r.state[f] for f in fields if f in r.state}

    async def take(self, key: str, now: float, capacity: int, period: float) -> float:
        return self._buckets.take(key, now, capacity, period)

    async def tick(self, room: str, likes: int, viewers: int, now: float) -> tuple[int, int]:
        r = self._room(room)
        r.likes += likes
        return r.likes, viewers

    async def subscribe(self, room: str, listener: Listener) -> None:
        self._room(room).listener = listener

    async def unsubscribe(self, room: str) -> None:
        r = self._rooms.get(room)
        if r is not None:
            r.listener = None
