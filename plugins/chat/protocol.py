"""The chat wire protocol, sans I/O: client frames in, typed commands out; events out as text
(JSON, the default) or binary (msgpack, subprotocol `mediacore.msgpack`) frames.

Client → server: `chat {text}`, `like {count?}`, `gift {gift, value}`; moderators also
`delete {id}`, `ban {user, seconds?}`, `slow_mode {seconds}`, `pin {id}`.
Server → client: `history {messages}`, `chat {id, seq, user, text, ts}`, `gift {id, seq, user,
gift, value, ts}`, `delete {id, seq}`, `ban {user, until, seq}`, `slow_mode {seconds, seq}`,
`pin {id, seq}`, `likes {total}`, `viewers {count}`, `error {code, retry_after?, detail?}`,
`reset`.

A frame that cannot be a message at all closes the connection (ProtocolViolation with a
WebSocket close code); a well-formed frame with bad fields gets an `error` event (BadMessage)
and the connection stays open.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import msgpack

from . import limits

MSGPACK_PROTOCOL = "mediacore.msgpack"
"""WebSocket subprotocol of msgpack binary frames."""

CLOSE_UNSUPPORTED = 1003
"""A binary frame on a JSON connection or a text frame on a msgpack one."""
CLOSE_INVALID = 1007
"""A frame that does not decode to an object (non-JSON, bad msgpack, a bare number)."""
CLOSE_POLICY = 1008
"""An invalid or expired token on the upgrade."""
CLOSE_TOO_BIG = 1009
"""A frame larger than `[chat] max_frame` (aiohttp's max_msg_size)."""
CLOSE_TRY_LATER = 1013
"""Too many connections from one address."""
CLOSE_TOO_SLOW = 4001
"""The client did not read fast enough: its queue of gifts and moderation events overflowed, or
it took nothing from its queue for `[chat] stall_timeout` seconds."""
CLOSE_GOING_AWAY = 1001
"""The server is stopping."""


class ProtocolViolation(Exception):
    """The frame cannot be a chat message: close with `code` and this message."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class BadMessage(Exception):
    """A well-formed frame with a bad type or fields: answer `error {code, detail}`."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(slots=True, frozen=True)
class Chat:
    text: str


@dataclass(slots=True, frozen=True)
class Like:
    count: int


@dataclass(slots=True, frozen=True)
class Gift:
    gift: str
    value: float


@dataclass(slots=True, frozen=True)
class Delete:
    id: str


@dataclass(slots=True, frozen=True)
class Ban:
    user: str
    seconds: float | None


@dataclass(slots=True, frozen=True)
class SlowMode:
    seconds: float


@dataclass(slots=True, frozen=True)
class Pin:
    id: str


Command = Chat | Like | Gift | Delete | Ban | SlowMode | Pin
MODERATOR_COMMANDS = (Delete, Ban, SlowMode, Pin)


class Codec:
    """JSON text frames, or msgpack binary frames."""

    def __init__(self, binary: bool) -> None:
        self.binary = binary

    def decode(self, data: str | bytes) -> dict[str, Any]:
        if isinstance(data, bytes) != self.binary:
            kind = "binary" if isinstance(data, bytes) else "text"
            raise ProtocolViolation(CLOSE_UNSUPPORTED, f"{kind} frame on a {self.name} connection")
        try:
            value = msgpack.unpackb(data, raw=False) if isinstance(data, bytes) else json.loads(data)
        except (ValueError, msgpack.UnpackException) as e:
            raise ProtocolViolation(CLOSE_INVALID, f"not {self.name}: {str(e)[:80]}") from e
        if not isinstance(value, dict):
            raise ProtocolViolation(CLOSE_INVALID, "a message is an object with a type")
        return value

    @property
    def name(self) -> str:
        return "msgpack" if self.binary else "JSON"


def encode_json(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def encode_msgpack(event: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(event, use_bin_type=True))


def _string(value: Any, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise BadMessage("bad_message", f"{field} must be a non-empty string")
    if len(value) > limit:
        raise BadMessage("bad_message", f"{field} is longer than {limit} characters")
    return value


def _number(value: Any, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadMessage("bad_message", f"{field} must be a number")
    if not low <= value <= high:
        raise BadMessage("bad_message", f"{field} must be between {low:g} and {high:g}")
    return float(value)


def parse_command(message: dict[str, Any]) -> Command:
    """The command in a decoded client frame; BadMessage for an unknown type or bad fields.
    Text length is not checked here: that is a policy with its own error (`too_long`)."""
    kind = message.get("type")
    if kind == "chat":
        text = message.get("text")
        if not isinstance(text, str):
            raise BadMessage("bad_message", "text must be a string")
        return Chat(text)
    if kind == "like":
        count = message.get("count", 1)
        return Like(int(_number(count, "count", 1, limits.MAX_LIKES_PER_FRAME)) if count is not None else 1)
    if kind == "gift":
        gift = _string(message.get("gift"), "gift", limits.MAX_GIFT_NAME)
        return Gift(gift, _number(message.get("value"), "value", 0, limits.MAX_GIFT_VALUE))
    if kind == "delete":
        return Delete(_string(message.get("id"), "id", limits.MAX_MESSAGE_ID))
    if kind == "ban":
        seconds = message.get("seconds")
        user = _string(message.get("user"), "user", limits.MAX_USER_NAME)
        return Ban(user, None if seconds is None else _number(seconds, "seconds", 1, limits.MAX_BAN_SECONDS))
    if kind == "slow_mode":
        return SlowMode(_number(message.get("seconds"), "seconds", 0, limits.MAX_SLOW_MODE_SECONDS))
    if kind == "pin":
        pin_id = message.get("id")
        return Pin("" if pin_id in (None, "") else _string(pin_id, "id", limits.MAX_MESSAGE_ID))
    raise BadMessage("unknown_type", f"unknown message type {str(kind)[:32]!r}")


def error(code: str, retry_after: float | None = None, detail: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "error", "code": code}
    if retry_after is not None:
        event["retry_after"] = round(retry_after, 3)
    if detail:
        event["detail"] = detail
    return event
