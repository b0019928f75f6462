"""One room on this node, sans I/O: the connections in it, the event → class mapping, and
the aggregation of likes and viewer counts (the node's shell calls `tick` every TICK_SECONDS,
so at most 10 updates per second reach a client, each carrying the exact total).

Fan-out never waits for a connection: `deliver` only queues (sendqueue.SendQueue decides what
a slow connection gives up), each connection's writer drains its own queue.
"""

from __future__ import annotations

from typing import Protocol

from .bus import Event
from .sendqueue import CHAT, STATE, URGENT, Outgoing

PRIORITY = {
    "chat": CHAT,
    "gift": URGENT,
    "delete": URGENT,
    "ban": URGENT,
    "slow_mode": URGENT,
    "pin": URGENT,
    "likes": STATE,
    "viewers": STATE,
}
"""Each event type's class; anything else (errors, reset) is URGENT."""


def outgoing(event: Event) -> Outgoing:
    return Outgoing(event, PRIORITY.get(str(event.get("type")), URGENT))


class Receiver(Protocol):
    def offer(self, item: Outgoing) -> None: ...


class LocalRoom:
    def __init__(self, name: str) -> None:
        self.name = name
        self.receivers: set[Receiver] = set()
        self.pending_likes = 0
        """Likes tapped on this node, not yet added to the room's total."""
        self.likes: Outgoing | None = None
        self.viewers: Outgoing | None = None
        self.delivered = 0
        """Events delivered to this node (one per event, however many connections)."""

    def deliver(self, event: Event) -> None:
        self.delivered += 1
        item = outgoing(event)
        for receiver in list(self.receivers):
            receiver.offer(item)

    def totals(self, likes: int, viewers: int) -> list[Outgoing]:
        """The likes / viewers updates to send after a tick: only the values that changed."""
        changed = []
        if self.likes is None or self.likes.event["total"] != likes:
            self.likes = outgoing({"type": "likes", "total": likes})
            changed.append(self.likes)
        if self.viewers is None or self.viewers.event["count"] != viewers:
            self.viewers = outgoing({"type": "viewers", "count": viewers})
            changed.append(self.viewers)
        return changed

    def broadcast(self, items: list[Outgoing]) -> None:
        for receiver in list(self.receivers):
            for item in items:
                receiver.offer(item)
