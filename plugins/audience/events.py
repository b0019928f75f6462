"""The one behaviour event model, its checks, and pseudonymous user ids (sans-I/O).

Every event names a pseudonymous user: `pseudonym(key, sub)`, an HMAC-SHA256 of the JWT
`sub` (or of a viewer key the engine hands to its hooks) under the node's secret key, so the
event store never holds an account id, and `DELETE /api/users/me/data` finds the rows of a
caller from the token alone."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import uuid
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


def new_id() -> str:
    return uuid.uuid4().hex


def _ident(data: dict[str, Any], name: str, required: bool) -> str:
    value = data.get(name, "")
    if value == "" and not required:
        return ""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise EventError(f"{name} must be 1 to {limits.MAX_ID_LENGTH} characters of [A-Za-z0-9_.:-]")
    return value


def _number(data: dict[str, Any], name: str, high: float) -> float:
    value = data.get(name, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EventError(f"{name} must be a number")
    if not 0 <= value <= high:
        raise EventError(f"{name} must be between 0 and {high:g}")
    return float(value)


FIELDS = frozenset({"id", "kind", "stream", "product", "ts", "duration", "value", "segment"})


def parse(data: Any, user: str, now: float) -> Event:
    """One event of a client's POST, for `user` (already pseudonymous), at `now` unless it
    carries its own `ts` (not in the future beyond limits.CLOCK_SKEW)."""
    if not isinstance(data, dict):
        raise EventError("an event must be a JSON object")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise EventError(f"unknown field {unknown[0]!r}")
    try:
        kind = Kind(str(data.get("kind")))
    except ValueError:
        raise EventError(f"kind must be one of {', '.join(k.value for k in Kind)}") from None
    event_id = _ident(data, "id", False) or new_id()
    stream = _ident(data, "stream", kind not in PRODUCT_KINDS and not kind.startswith("coupon"))
    product = _ident(data, "product", kind in PRODUCT_KINDS)
    ts = _number(data, "ts", now + limits.CLOCK_SKEW) if "ts" in data else now
    duration = _number(data, "duration", limits.MAX_WATCH_SECONDS)
    value = _number(data, "value", limits.MAX_VALUE)
    segment = _ident(data, "segment", False)
    return Event(event_id, kind, user, ts, stream, product, duration, value, segment)
