"""The one behaviour event model, its checks, and pseudonymous user ids (sans-I/O).

Every event names a pseudonymous user: `pseudonym(key, sub)`, an HMAC-SHA256 of the JWT
`sub` (or of a viewer key the engine hands to its hooks) under the node's secret key, so the
event store never holds an account id, and `DELETE /api/users/me/data` finds the rows of a
caller from the token alone."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from . import limits


class Kind(StrEnum):
    WATCH_START = "watch_start"
    WATCH_STOP = "watch_stop"
    LIKE = "like"
    COMMENT = "comment"
    GIFT = "gift"
    CARD_IMPRESSION = "card_impression"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    ORDER = "order"
    COUPON_SHOWN = "coupon_shown"
    COUPON_REDEEMED = "coupon_redeemed"


PRODUCT_KINDS = frozenset({Kind.CARD_IMPRESSION, Kind.CLICK, Kind.ADD_TO_CART, Kind.ORDER})
"""Kinds that are about a product: `product` is required."""

_ID = re.compile(rf"[A-Za-z0-9_.:\-]{{1,{limits.MAX_ID_LENGTH}}}")


class EventError(ValueError):
    """An event that is refused (its message names the field)."""


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    """Unique per event (the client's UUID, or one made here): at-least-once delivery
    stores it once."""
    kind: Kind
    user: str
    """Pseudonymous user id (see `pseudonym`)."""
    ts: float
    """Seconds since the epoch."""
    stream: str = ""
    product: str = ""
    duration: float = 0.0
    """Seconds watched (watch_stop)."""
    value: float = 0.0
    """Minor units of an order or a gift; percent off of a coupon event."""
    segment: str = ""
    """Free label of the coupon's audience or campaign (coupon events), else empty."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        data = json.loads(raw)
        data["kind"] = Kind(data["kind"])
        return cls(**data)


def pseudonym(key: bytes, sub: str) -> str:
    """The pseudonymous id of `sub`: 32 hex digits of HMAC-SHA256 under `key`."""
    return hmac.new(key, sub.encode(), hashlib.sha256).hexdigest()[:32]


class IdSource:
    """Ids for events that come without one: a random prefix drawn once (8 bytes from the
    OS) and a counter, 32 hex digits like a UUID's. Drawing a UUID per event costs a
    getrandom() system call that releases the GIL, and a busy second thread (the SQLite
    writer) then holds the event loop's thread off for up to the switch interval each time:
    at 50,000 events/s that was a third of the loop's time. Make one per process (a fork
    must not share the prefix)."""

    def __init__(self, prefix: bytes | None = None) -> None:
        self.prefix = (prefix if prefix is not None else os.urandom(8)).hex()
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self._counter):016x}"


def _ident(data: dict[str, Any], name: str, required: bool) -> str:
    value = data.get(name, "")
    if value == "" and not required:
        return ""
    if value.__class__ is not str or not _ID.fullmatch(value):
        raise EventError(f"{name} must be 1 to {limits.MAX_ID_LENGTH} characters of [A-Za-z0-9_.:-]")
    return value


def _number(data: dict[str, Any], name: str, high: float) -> float:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EventError(f"{name} must be a number")
    if not 0 <= value <= high:
        raise EventError(f"{name} must be between 0 and {high:g}")
    return float(value)


FIELDS = frozenset({"id", "kind", "stream", "product", "ts", "duration", "value", "segment"})
_KINDS: dict[str, Kind] = {k.value: k for k in Kind}
_STREAM_REQUIRED = frozenset(k for k in Kind if k not in PRODUCT_KINDS and not k.startswith("coupon"))
"""Kinds about a stream: `stream` is required."""


def parse(data: Any, user: str, now: float, new_id: Callable[[], str]) -> Event:
    """One event of a client's POST, for `user` (already pseudonymous), at `now` unless it
    carries its own `ts` (not in the future beyond limits.CLOCK_SKEW); `new_id` names an
    event that brings no id (an `IdSource`). Runs on the event loop for every posted event:
    plain dictionary lookups, no exceptions on the accepted path."""
    if data.__class__ is not dict:
        raise EventError("an event must be a JSON object")
    if not FIELDS.issuperset(data):
        raise EventError(f"unknown field {sorted(set(data) - FIELDS)[0]!r}")
    name = data.get("kind")
    kind = _KINDS.get(name) if name.__class__ is str else None
    if kind is None:
        raise EventError(f"kind must be one of {', '.join(k.value for k in Kind)}")
    event_id = _ident(data, "id", False) or new_id()
    stream = _ident(data, "stream", kind in _STREAM_REQUIRED)
    product = _ident(data, "product", kind in PRODUCT_KINDS)
    ts = _number(data, "ts", now + limits.CLOCK_SKEW) if "ts" in data else now
    duration = _number(data, "duration", limits.MAX_WATCH_SECONDS) if "duration" in data else 0.0
    value = _number(data, "value", limits.MAX_VALUE) if "value" in data else 0.0
    segment = _ident(data, "segment", False)
    return Event(event_id, kind, user, ts, stream, product, duration, value, segment)
