"""What a room does with one client command: the checks in order, then publish or refuse.
No sockets here; the bus, the moderator, the review hook and the clock are handed in, so the
tests drive it with a fake clock and the in-process bus.

Order of checks for `chat`: may write → length cap (`too_long`) → moderation (`blocked`,
`empty`) → ban (`banned`) → duplicate (`duplicate`) → slow mode (`slow_mode`, retry_after;
moderators are exempt) → rate limit (`rate_limited`, retry_after) → review hook (`denied`)
→ publish. Likes are counted by the node and added to the room's total on the next tick.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .bus import Bus, BusUnavailable, Event
from .protocol import MODERATOR_COMMANDS, BadMessage, Ban, Chat, Command, Delete, Gift, Like, Pin, SlowMode, error
from .rate import Duplicates
from .review import ReviewHook
from .settings import ChatSettings
from .text_policy import Moderator, over_cap

UNAVAILABLE_RETRY = 1.0
"""retry_after (seconds) told to a client whose command met a bus that is down."""


@dataclass(slots=True, frozen=True)
class Sender:
    user: str
    """The JWT `sub`, or a per-connection guest id."""
    moderator: bool
    may_write: bool


def ban_field(user: str) -> str:
    return f"ban:{user}"


def banned(until: str | None, now: float) -> bool:
    """A ban field's value: "0" for ever, else the wall-clock time it ends."""
    if until is None:
        return False
    value = float(until)
    return value == 0 or value > now


class RoomService:
    def __init__(
        self,
        settings: ChatSettings,
        bus: Bus,
        moderator: Moderator,
        review: ReviewHook | None,
        wall_clock: Callable[[], float],
        add_likes: Callable[[str, int], None],
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.moderator = moderator
        self.review = review
        self.wall_clock = wall_clock
        self.add_likes = add_likes
        self.duplicates = Duplicates(settings.duplicate_window)
        self.refused: dict[str, int] = {}
        """Refused commands by error code (for metrics and tests)."""

    def _refuse(self, code: str, retry_after: float | None = None, detail: str | None = None) -> Event:
        self.refused[code] = self.refused.get(code, 0) + 1
        return error(code, retry_after, detail)

    async def handle(self, room: str, sender: Sender, command: Command) -> Event | None:
        """Carry out `command`: None when done, or the `error` event to send back."""
        if isinstance(command, MODERATOR_COMMANDS) and not sender.moderator:
            return self._refuse("forbidden", detail="moderators only")
        if not sender.may_write:
            return self._refuse("unauthorized", detail="sign in to write")
        try:
            if isinstance(command, Chat):
                return await self._chat(room, sender, command.text)
            if isinstance(command, Like):
                self.add_likes(room, command.count)
                return None
            if isinstance(command, Gift):
                return await self._gift(room, sender, command)
            return await self._moderate(room, sender, command)
        except BusUnavailable:
            return self._refuse("unavailable", UNAVAILABLE_RETRY, "chat is reconnecting")

    async def _chat(self, room: str, sender: Sender, text: str) -> Event | None:
        s = self.settings
        if over_cap(text, s.max_text):
            return self._refuse("too_long", detail=f"at most {s.max_text} characters")
        verdict = self.moderator.check(text)
        if not verdict.allowed:
            code = "empty" if verdict.reason == "empty" else "blocked"
            return self._refuse(code, detail=verdict.reason)
        text = verdict.text
        now = self.wall_clock()
        state = await self.bus.state(room, ["slow_mode", ban_field(sender.user)])
        if banned(state.get(ban_field(sender.user)), now):
            return self._refuse("banned")
        if self.duplicates.seen(sender.user, text, now):
            return self._refuse("duplicate", detail="you just said that")
        slow = float(state.get("slow_mode") or 0)
        if slow > 0 and not sender.moderator:
            wait = await self.bus.take(f"slow:{room}:{sender.user}", now, 1, slow)
            if wait > 0:
                return self._refuse("slow_mode", wait)
        capacity = s.moderator_rate_messages if sender.moderator else s.rate_messages
        wait = await self.bus.take(f"rate:{sender.user}", now, capacity, s.rate_window)
        if wait > 0:
            return self._refuse("rate_limited", wait)
        if self.review is not None:
            review = await self.review.review(room, sender.user, text)
            if review.fallback:
                self.refused["review_fallback"] = self.refused.get("review_fallback", 0) + 1
            if not review.allowed:
                return self._refuse("denied", detail="refused by review")
            if over_cap(review.text, s.max_text):
                return self._refuse("too_long", detail=f"at most {s.max_text} characters")
            text = review.text
        await self.bus.publish(room, self._message("chat", sender, now, text=text))
        return None

    async def _gift(self, room: str, sender: Sender, gift: Gift) -> Event | None:
        now = self.wall_clock()
        state = await self.bus.state(room, [ban_field(sender.user)])
        if banned(state.get(ban_field(sender.user)), now):
            return self._refuse("banned")
        value: float | int = int(gift.value) if float(gift.value).is_integer() else gift.value
        await self.bus.publish(room, self._message("gift", sender, now, gift=gift.gift, value=value))
        return None

    async def _moderate(self, room: str, sender: Sender, command: Command) -> Event | None:
        now = self.wall_clock()
        by = sender.user
        if isinstance(command, Delete):
            await self.bus.publish(room, {"type": "delete", "id": command.id, "by": by, "ts": now})
        elif isinstance(command, Ban):
            until = 0.0 if command.seconds is None else now + command.seconds
            event = {"type": "ban", "user": command.user, "until": until or None, "by": by, "ts": now}
            await self.bus.publish(room, event, {ban_field(command.user): repr(until)})
        elif isinstance(command, SlowMode):
            seconds: float | int = int(command.seconds) if float(command.seconds).is_integer() else command.seconds
            event = {"type": "slow_mode", "seconds": seconds, "by": by, "ts": now}
            await self.bus.publish(room, event, {"slow_mode": repr(command.seconds) if command.seconds else ""})
        elif isinstance(command, Pin):
            await self.bus.publish(
                room, {"type": "pin", "id": command.id or None, "by": by, "ts": now}, {"pin": command.id}
            )
        else:  # pragma: no cover - parse_command returns only the types above
            raise BadMessage("unknown_type", type(command).__name__)
        return None

    @staticmethod
    def _message(kind: str, sender: Sender, now: float, **fields: Any) -> Event:
        return {"type": kind, "id": uuid.uuid4().hex[:16], "user": sender.user, **fields, "ts": round(now, 3)}


VISIBLE = ("chat", "gift")


def visible_history(events: list[Event], count: int) -> list[Event]:
    """The last `count` chat messages and gifts among `events` (oldest first), without the
    deleted ones."""
    deleted = {e.get("id") for e in events if e.get("type") == "delete"}
    shown = [e for e in events if e.get("type") in VISIBLE and e.get("id") not in deleted]
    return shown[-count:]
