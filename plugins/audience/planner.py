"""The promotion planner (sans-I/O, numpy): uptake curves per segment from past coupon events,
and the discount that maximises uptake minus cost over revenue.

**History.** Each `coupon_shown` event (value = percent off) is one coupon offered; each
`coupon_redeemed` one taken. Both count in the segment of the event's own `segment` label,
or, without one, the user's K-means segment (`k3`), else `all`. Per segment and discount:
shown n, redeemed r.

**Uptake curve.** A segment with at least MIN_COUPON_HISTORY coupons shown gets
u(d) = σ(α + β·d), a logistic regression of redemption on the discount d (percent), fitted by
Newton's method on its binomial counts (β ≥ 0 enforced: a larger discount never lowers
uptake). Other segments get the proportional model u(d) = min(1, rate · d), rate =
`[audience] uptake_per_percent`.

**Objective.** For a segment of N viewers, option (d, c) with c the cost per redeemed coupon
(minor units) and p the basket price before the discount (minor units):
redemptions = N·u(d), revenue = N·u(d)·p·(1 − d/100), cost = N·u(d)·c, and

    J(d) = u(d) − cost / revenue = u(d) − c / (p · (1 − d/100))

(both terms are shares: the uptake, and the part of the revenue the promotion costs). The
pick of a segment is the option with the largest J; the overall pick maximises J with the
audience-weighted uptake Σ N_s·u_s(d) / Σ N_s."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import limits
from .events import Event, Kind
from .logistic import sigmoid


@dataclass(frozen=True, slots=True)
class Option:
    discount: float
    """Percent off, 0 < discount < 100."""
    cost: float
    """Minor units per redeemed coupon."""


@dataclass(frozen=True, slots=True)
class Curve:
    alpha: float
    beta: float
    shown: int
    """Coupons shown behind the fit (0: the proportional model)."""
    rate: float = 0.0
    """Uptake per percent of the proportional model."""

    @property
    def model(self) -> str:
        return "logistic" if self.shown else "proportional"

    def uptake(self, discount: float) -> float:
        if not self.shown:
            return min(1.0, self.rate * discount)
        return float(sigmoid(np.array(self.alpha + self.beta * discount)))


History = dict[str, dict[float, list[int]]]
"""segment → discount → [shown, redeemed]."""


def segment_of(event: Event, segments: Mapping[str, int]) -> str:
    if event.segment:
        return event.segment
    k = segments.get(event.user)
    return f"k{k}" if k is not None else "all"


def history(events: Iterable[Event], segments: Mapping[str, int]) -> History:
    out: History = {}
    for e in events:
        if e.kind not in (Kind.COUPON_SHOWN, Kind.COUPON_REDEEMED):
            continue
        counts = out.setdefault(segment_of(e, segments), {}).setdefault(float(e.value), [0, 0])
        counts[0 if e.kind is Kind.COUPON_SHOWN else 1] += 1
    return out


def fit_curve(counts: Mapping[float, Sequence[int]], rate: float) -> Curve:
    """The segment's logistic uptake curve, or the proportional one with too little history."""
    d = np.array(sorted(counts), dtype=np.float64)
    n = np.array([counts[k][0] for k in sorted(counts)], dtype=np.float64)
    r = np.minimum(np.array([counts[k][1] for k in sorted(counts)], dtype=np.float64), n)
    shown = int(n.sum())
    if shown < limits.MIN_COUPON_HISTORY:
        return Curve(0.0, 0.0, 0, rate)
    scale = max(float(d.max()), 1.0)
    x = np.column_stack([np.ones(len(d)), d / scale])
    w = np.zeros(2)
    rate_all = (r.sum() + 0.5) / (shown + 1.0)
    w[0] = math.log(rate_all / (1 - rate_all))
    for _ in range(limits.NEWTON_STEPS):
        p = sigmoid(x @ w)
        grad = x.T @ (n * p - r) / shown + limits.PLATT_L2 * w
        hess = (x.T * (n * p * (1 - p))) @ x / shown + limits.PLATT_L2 * np.eye(2)
        step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
        w -= step
        if w[1] < 0:  # uptake must not fall as the discount grows: refit the level alone
            w[1] = 0.0
            rate_all = float(np.clip(r.sum() / shown, limits.MIN_RATE, 1 - limits.MIN_RATE))
            w[0] = math.log(rate_all / (1 - rate_all))
            break
        if float(np.max(np.abs(step))) < limits.NEWTON_TOLERANCE:
            break
    return Curve(float(w[0]), float(w[1] / scale), shown)


def curves(hist: History, rate: float) -> dict[str, Curve]:
    return {segment: fit_curve(counts, rate) for segment, counts in hist.items()}


def objective(uptake: float, option: Option, price: float) -> float:
    return uptake - option.cost / (price * (1.0 - option.discount / 100.0))


def plan(
    options: Sequence[Option],
    price: float,
    audience: Mapping[str, float],
    fitted: Mapping[str, Curve],
    rate: float,
) -> dict[str, Any]:
    """Per segment of `audience` (segment → viewers) each option's expected uptake,
    redemptions, revenue, cost and objective, and the pick; then the same overall."""
    segments_out: dict[str, Any] = {}
    weighted = np.zeros(len(options))
    total = float(sum(audience.values()))
    for segment, viewers in sorted(audience.items()):
        curve = fitted.get(segment) or Curve(0.0, 0.0, 0, rate)
        rows = []
        for i, o in enumerate(options):
            u = curve.uptake(o.discount)
            weighted[i] += viewers * u
            rows.append(_row(o, u, viewers, price))
        pick = max(range(len(rows)), key=lambda i: (rows[i]["objective"], -i))
        segments_out[segment] = {
            "viewers": viewers,
            "model": curve.model,
            "history": curve.shown,
            "options": rows,
            "pick": pick,
        }
    overall = [_row(o, weighted[i] / total if total else 0.0, total, price) for i, o in enumerate(options)]
    best = max(range(len(overall)), key=lambda i: (overall[i]["objective"], -i)) if overall else None
    return {"price": price, "segments": segments_out, "overall": {"options": overall, "pick": best}}


def _row(o: Option, u: float, viewers: float, price: float) -> dict[str, float]:
    redemptions = viewers * u
    return {
        "discount": o.discount,
        "cost_per_redemption": o.cost,
        "uptake": round(u, 6),
        "redemptions": round(redemptions, 3),
        "revenue": round(redemptions * price * (1 - o.discount / 100.0), 2),
        "cost": round(redemptions * o.cost, 2),
        "objective": round(objective(u, o, price), 6),
    }


class PlanError(ValueError):
    pass


def parse_request(data: Any) -> tuple[list[Option], float, dict[str, float] | None]:
    """`{"price": P, "options": [{"discount": D, "cost": C}, ...], "audience": {SEG: N}?}`."""
    if not isinstance(data, dict):
        raise PlanError("the body must be a JSON object")
    price = data.get("price")
    if isinstance(price, bool) or not isinstance(price, int | float) or not 0 < price <= limits.MAX_VALUE:
        raise PlanError(f"price must be a number of minor units above 0 and at most {limits.MAX_VALUE:g}")
    raw = data.get("options")
    if not isinstance(raw, list) or not 1 <= len(raw) <= limits.MAX_PLAN_OPTIONS:
        raise PlanError(f"options must be a list of 1 to {limits.MAX_PLAN_OPTIONS}")
    options = []
    for item in raw:
        if not isinstance(item, dict):
            raise PlanError("each option must be an object {discount, cost}")
        d, c = item.get("discount"), item.get("cost", 0)
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0 < d < 100:
            raise PlanError("discount must be a percent above 0 and below 100")
        if isinstance(c, bool) or not isinstance(c, int | float) or not 0 <= c <= limits.MAX_VALUE:
            raise PlanError("cost must be a number of minor units, 0 or more")
        options.append(Option(float(d), float(c)))
    audience = data.get("audience")
    if audience is None:
        return options, float(price), None
    if not isinstance(audience, dict) or not 1 <= len(audience) <= limits.MAX_PLAN_OPTIONS:
        raise PlanError(f"audience must be an object of 1 to {limits.MAX_PLAN_OPTIONS} segments")
    out = {}
    for segment, viewers in audience.items():
        if isinstance(viewers, bool) or not isinstance(viewers, int | float) or not 0 <= viewers <= limits.MAX_VALUE:
            raise PlanError("audience values must be viewer counts")
        out[str(segment)[: limits.MAX_ID_LENGTH]] = float(viewers)
    return options, float(price), out
