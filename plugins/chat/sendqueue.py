"""One connection's send queue, sans I/O: three classes, strict priority between them.

    URGENT  gifts and moderation events (delete, ban, slow mode, pin), errors, reset:
            never shed; more than `urgent_limit` queued means the client cannot keep up
            (the shell closes it, CLOSE_TOO_SLOW)
    CHAT    chat messages: at most `chat_limit` queued; a new one sheds the oldest (counted)
    STATE   the likes total and the viewer count: one slot each, the newest value replaces
            the queued one, so totals stay exact however far behind the client is

Why not the hub's PriorityPacketQueue (mediacore/hub/priority_queue.py, Cython-compiled):
it delivers in arrival order, because a decoder needs frames in decode order, and only uses
priority to choose what to give up; here a gift must overtake the chat queued before it, a
delete must cancel the queued message it deletes, and totals coalesce instead of queueing.
Its CONTROL class is also unbounded, and its GOP eviction has no meaning for chat. The shapes
differ enough that reusing it would mean bending both.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .protocol import encode_json, encode_msgpack

URGENT = 0
CHAT = 1
STATE = 2


class Outgoing:
    """One event on its way to many connections: encoded at most once per codec."""

    __slots__ = ("event", "priority", "_json", "_msgpack")

    def __init__(self, event: dict[str, Any], priority: int) -> None:
        self.event = event
        self.priority = priority
        self._json: str | None = None
        self._msgpack: bytes | None = None

    @property
    def seq(self) -> int:
        seq = self.event.get("seq", 0)
        return seq if isinstance(seq, int) else 0

    def frame(self, binary: bool) -> str | bytes:
        if binary:
            if self._msgpack is None:
                self._msgpack = encode_msgpack(self.event)
            return self._msgpack
        if self._json is None:
            self._json = encode_json(self.event)
        return self._json


class SendQueue:
    def __init__(self, chat_limit: int, urgent_limit: int, now: float) -> None:
        self.chat_limit = chat_limit
        self.urgent_limit = urgent_limit
        self._urgent: deque[Outgoing] = deque()
        self._chat: deque[Outgoing] = deque()
        self._state: dict[str, Outgoing] = {}
        self.shed = 0
        """Chat messages given up for this connection."""
        self.idle_since = now
        """When the queue last went from empty to non-empty or an item was last taken."""

    def __len__(self) -> int:
        return len(self._urgent) + len(self._chat) + len(self._state)

    def push(self, item: Outgoing, now: float) -> bool:
        """Queue `item` by its class; False when the urgent class overflowed (close the
        connection: the client cannot keep up)."""
        if not self:
            self.idle_since = now
        if item.priority == URGENT:
            if len(self._urgent) >= self.urgent_limit:
                return False
            self._urgent.append(item)
        elif item.priority == CHAT:
            if len(self._chat) >= self.chat_limit:
                self._chat.popleft()
                self.shed += 1
            self._chat.append(item)
        else:
            self._state[str(item.event.get("type"))] = item
        return True

    def cancel_chat(self, message_id: str) -> bool:
        """Drop the queued chat message `message_id` (it was deleted before it went out)."""
        for item in self._chat:
            if item.event.get("id") == message_id:
                self._chat.remove(item)
                return True
        return False

    def pop(self, now: float) -> Outgoing | None:
        """The next item to send, most urgent class first, oldest first within a class."""
        self.idle_since = now
        if self._urgent:
            return self._urgent.popleft()
        if self._chat:
            return self._chat.popleft()
        if self._state:
            key = next(iter(self._state))
            return self._state.pop(key)
        return None

    def stalled(self, now: float, timeout: float) -> bool:
        """Whether items have waited `timeout` seconds without the client taking any."""
        return bool(self) and now - self.idle_since >= timeout
