"""Funnel counters: impressions, clicks and add-to-carts the players report, and the orders
taken, per stream, product and minute, for `GET /api/streams/STREAM/stats`.

Kept in memory on each node for `[commerce] stats_minutes`; the Prometheus counters beside
them add up over nodes. Bounded: at most `max_pairs` (stream, product) pairs are counted,
and a pair with nothing inside the window is forgotten to make room. Pure: `now` (seconds
since the epoch) is passed in."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import limits

KINDS = ("impression", "click", "add_to_cart", "order")


@dataclass(slots=True)
class _Pair:
    minutes: OrderedDict[int, list[int]] = field(default_factory=OrderedDict)
    """Epoch minute → counts in KINDS order, oldest first."""


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _counts_json(counts: list[int]) -> dict[str, Any]:
    impressions, clicks, carts, orders = counts
    return {
        "impressions": impressions,
        "clicks": clicks,
        "add_to_cart": carts,
        "orders": orders,
        "ctr": _rate(clicks, impressions),
        "conversion": _rate(orders, clicks),
    }


class Funnel:
    def __init__(self, minutes: int, max_pairs: int) -> None:
        self.minutes = minutes
        self.max_pairs = max_pairs
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._last_card: OrderedDict[str, str] = OrderedDict()

    def card_shown(self, stream: str, product_id: str) -> None:
        """Remembers the stream that last carried the product's card: an order that names no
        stream counts for it."""
        self._last_card[product_id] = stream
        self._last_card.move_to_end(product_id)
        while len(self._last_card) > limits.LAST_CARD_STREAMS:
            self._last_card.popitem(last=False)

    def record(self, stream: str, product_id: str, kind: str, now: float) -> bool:
        """Counts one event; False (nothing counted) when the table is full."""
        key = (stream, product_id)
        pair = self._pairs.get(key)
        if pair is None:
            if len(self._pairs) >= self.max_pairs:
                self._forget_stale(now)
                if len(self._pairs) >= self.max_pairs:
                    return False
            pair = self._pairs[key] = _Pair()
        minute = int(now // 60)
        counts = pair.minutes.get(minute)
        if counts is None:
            counts = pair.minutes[minute] = [0, 0, 0, 0]
            while pair.minutes and next(iter(pair.minutes)) <= minute - self.minutes:
                pair.minutes.popitem(last=False)
        counts[KINDS.index(kind)] += 1
        return True

    def order(self, stream: str | None, product_id: str, now: float) -> None:
        """Counts an order for `stream`, or the stream that last showed the product's card."""
        stream = stream or self._last_card.get(product_id)
        if stream is not None:
            self.record(stream, product_id, "order", now)

    def _forget_stale(self, now: float) -> None:
        oldest = int(now // 60) - self.minutes
        for key in [k for k, p in self._pairs.items() if not p.minutes or next(reversed(p.minutes)) <= oldest]:
            del self._pairs[key]

    def stats(self, stream: str, now: float) -> dict[str, Any]:
        """Per product: totals over the window and per minute (oldest first), with CTR
        (clicks / impressions) and conversion (orders / clicks)."""
        oldest = int(now // 60) - self.minutes
        products = []
        for (name, product_id), pair in self._pairs.items():
            if name != stream:
                continue
            rows = [(m, c) for m, c in pair.minutes.items() if m > oldest]
            if not rows:
                continue
            totals = [sum(c[i] for _, c in rows) for i in range(len(KINDS))]
            per_minute = [
                {"minute": datetime.fromtimestamp(m * 60, UTC).strftime("%Y-%m-%dT%H:%MZ"), **_counts_json(c)}
                for m, c in rows
            ]
            products.append({"product_id": product_id, **_counts_json(totals), "per_minute": per_minute})
        products.sort(key=lambda p: (-p["impressions"], p["product_id"]))
        return {"stream": stream, "minutes": self.minutes, "products": products[: limits.MAX_STATS_PRODUCTS_SHOWN]}
