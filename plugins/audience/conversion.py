"""CTR and purchase-conversion models over the stored events (sans-I/O, numpy).

P(purchase) = P(click) × P(purchase | click): two regularised logistic regressions
(`logistic.fit`, Newton/IRLS, L2) with Platt calibration on the newest CALIBRATION_FRACTION of
the training impressions.

Rows are card impressions. Their features are computed in one pass over the events in time
order from counters that hold only what happened *before* the impression (no look-ahead):

- stream_affinity: the viewer's past stream weights (cf.weights) times the cosine similarity
  of those streams to the impression's stream, over their total (1: only this stream or
  streams watched by the same people); stream_history: 1 when the viewer has any;
- session_engaged: the viewer liked, commented or gifted in this session before the card;
  session_minutes: minutes since their watch start on this stream; card_position: cards of
  this session shown before this one;
- product_ctr, product_exposure: the product's clicks / impressions, smoothed toward the
  global rate by PRIOR_WEIGHT, and the log of its impressions; user_ctr, user_exposure: the
  same for the viewer;
- price_level, price_known: log of the product's mean order value (the global mean when it
  has no orders yet), and whether it is known;
- product_conversion, user_conversion: orders / clicks, smoothed (purchase model only).

The outcome of an impression is the same user's click of the product within
ATTRIBUTION_WINDOW (and an order after that click). The stream similarity comes from the
events given for it (the training slice in the evaluation)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import cf, limits, logistic
from .events import Event, Kind

CLICK_FEATURES = (
    "stream_affinity",
    "stream_history",
    "session_engaged",
    "session_minutes",
    "card_position",
    "product_ctr",
    "product_exposure",
    "user_ctr",
    "user_exposure",
    "price_level",
    "price_known",
)
BUY_FEATURES = (*CLICK_FEATURES, "product_conversion", "user_conversion")
ENGAGEMENT = frozenset({Kind.LIKE, Kind.COMMENT, Kind.GIFT})


def stream_similarity(events: Iterable[Event]) -> dict[str, dict[str, float]]:
    """Per stream its SIMILAR_STREAMS most similar streams (cosine of the users × streams
    implicit-feedback columns)."""
    table = cf.Interactions()
    for e in events:
        ws, _ = cf.weights(e)
        if ws > 0:
            table.add(e.user, e.stream, ws, e.ts)
    x = table.matrix()
    if x.nnz == 0:
        return {}
    sim = cf.item_similarity(x).tocsr()
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(table.item_names):
        lo, hi = sim.indptr[i], sim.indptr[i + 1]
        cols, vals = sim.indices[lo:hi], sim.data[lo:hi]
        best = np.argsort(-vals, kind="stable")[: limits.SIMILAR_STREAMS]
        out[name] = {table.item_names[cols[j]]: float(vals[j]) for j in best}
    return out


@dataclass(slots=True)
class _Session:
    stream: str
    start: float
    engaged: bool = False
    cards: int = 0


@dataclass(slots=True)
class _Counts:
    impressions: float = 0.0
    clicks: float = 0.0
    orders: float = 0.0
    value: float = 0.0


class FeatureState:
    """What is known at a point of the event stream: per viewer and product counts, stream
    weights and the open session; `features()` reads it, `observe()` moves it forward."""

    def __init__(self, similar: dict[str, dict[str, float]]) -> None:
        self.similar = similar
        self.streams: dict[str, dict[str, float]] = {}
        self.sessions: dict[str, _Session] = {}
        self.products: dict[str, _Counts] = {}
        self.users: dict[str, _Counts] = {}
        self.total = _Counts()

    def _rates(self) -> tuple[float, float, float]:
        t = self.total
        ctr = (t.clicks + 1.0) / (t.impressions + 2.0)
        cvr = (t.orders + 1.0) / (t.clicks + 2.0)
        mean_value = t.value / t.orders if t.orders else 1.0
        return ctr, cvr, mean_value

    def affinity(self, user: str, stream: str) -> tuple[float, float]:
        history = self.streams.get(user)
        if not history:
            return 0.0, 0.0
        similar = self.similar.get(stream, {})
        total = sum(history.values())
        score = sum(w * (1.0 if s == stream else similar.get(s, 0.0)) for s, w in history.items())
        return score / total, 1.0

    def features(self, user: str, product: str, stream: str, ts: float) -> np.ndarray:
        """The BUY_FEATURES of showing `product` to `user` on `stream` at `ts` (the first
        len(CLICK_FEATURES) are the click model's)."""
        ctr, cvr, mean_value = self._rates()
        affinity, history = self.affinity(user, stream) if stream else (0.0, 0.0)
        session = self.sessions.get(user)
        on = session is not None and session.stream == stream
        p = self.products.get(product) or _Counts()
        u = self.users.get(user) or _Counts()
        w = limits.PRIOR_WEIGHT
        value = p.value / p.orders if p.orders else mean_value
        return np.array(
            [
                affinity,
                history,
                1.0 if on and session.engaged else 0.0,  # type: ignore[union-attr]
                min(max(ts - session.start, 0.0) / 60.0, 60.0) if on else 0.0,  # type: ignore[union-attr]
                float(session.cards) if on else 0.0,  # type: ignore[union-attr]
                (p.clicks + w * ctr) / (p.impressions + w),
                math.log1p(p.impressions),
                (u.clicks + w * ctr) / (u.impressions + w),
                math.log1p(u.impressions),
                math.log1p(value),
                1.0 if p.orders else 0.0,
                (p.orders + w * cvr) / (p.clicks + w),
                (u.orders + w * cvr) / (u.clicks + w),
            ]
        )

    def forget(self, user: str) -> None:
        """Drop the user's rows (their data is being deleted)."""
        for table in (self.streams, self.sessions, self.users):
            table.pop(user, None)

    def observe(self, e: Event) -> None:
        ws, _ = cf.weights(e)
        if ws > 0:
            history = self.streams.setdefault(e.user, {})
            history[e.stream] = history.get(e.stream, 0.0) + ws
        if e.kind is Kind.WATCH_START:
            self.sessions[e.user] = _Session(e.stream, e.ts)
        elif e.kind is Kind.WATCH_STOP:
            session = self.sessions.get(e.user)
            if session is not None and session.stream == e.stream:
                del self.sessions[e.user]
        elif e.kind in ENGAGEMENT:
            session = self.sessions.get(e.user)
            if session is not None and session.stream == e.stream:
                session.engaged = True
        if e.kind not in (Kind.CARD_IMPRESSION, Kind.CLICK, Kind.ORDER):
            return
        for counts in (
            self.products.setdefault(e.product, _Counts()),
            self.users.setdefault(e.user, _Counts()),
            self.total,
        ):
            if e.kind is Kind.CARD_IMPRESSION:
                counts.impressions += 1
            elif e.kind is Kind.CLICK:
                counts.clicks += 1
            else:
                counts.orders += 1
                counts.value += e.value
        if e.kind is Kind.CARD_IMPRESSION:
            session = self.sessions.get(e.user)
            if session is not None and session.stream == e.stream:
                session.cards += 1


@dataclass(slots=True)
class Dataset:
    x: np.ndarray
    """Rows of BUY_FEATURES, one per card impression (the click model uses the first columns)."""
    clicked: np.ndarray
    bought: np.ndarray
    ts: np.ndarray
    ids: list[str] = field(default_factory=list)


def extract(events: Iterable[Event], similar: dict[str, dict[str, float]]) -> tuple[Dataset, FeatureState]:
    """One row per card impression in `events` (taken in ts order) with its outcome, and the
    state after the last event (what serving predicts from)."""
    state = FeatureState(similar)
    rows: list[np.ndarray] = []
    clicked: list[bool] = []
    bought: list[bool] = []
    ts: list[float] = []
    ids: list[str] = []
    last: dict[tuple[str, str], tuple[int, float]] = {}
    for e in sorted(events, key=lambda e: e.ts):
        if e.kind is Kind.CARD_IMPRESSION:
            last[(e.user, e.product)] = (len(rows), e.ts)
            rows.append(state.features(e.user, e.product, e.stream, e.ts))
            clicked.append(False)
            bought.append(False)
            ts.append(e.ts)
            ids.append(e.id)
        elif e.kind in (Kind.CLICK, Kind.ORDER):
            seen = last.get((e.user, e.product))
            if seen is not None and e.ts - seen[1] <= limits.ATTRIBUTION_WINDOW:
                if e.kind is Kind.CLICK:
                    clicked[seen[0]] = True
                elif clicked[seen[0]]:
                    bought[seen[0]] = True
        state.observe(e)
    x = np.vstack(rows) if rows else np.zeros((0, len(BUY_FEATURES)))
    return Dataset(x, np.array(clicked, dtype=bool), np.array(bought, dtype=bool), np.array(ts), ids), state


@dataclass(slots=True)
class Models:
    click: logistic.Logistic
    buy: logistic.Logistic
    click_prior: float
    buy_prior: float
    rows: int
    clicks: int
    purchases: int

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(click), P(purchase) = P(click) × P(purchase | click)) per row of BUY_FEATURES."""
        x = np.atleast_2d(x)
        p_click = self.click.predict(x[:, : len(CLICK_FEATURES)])
        return p_click, p_click * self.buy.predict(x)


def _constant(rate: float, width: int) -> logistic.Logistic:
    rate = min(max(rate, limits.MIN_RATE), 1 - limits.MIN_RATE)
    w = np.zeros(width + 1)
    w[0] = math.log(rate / (1 - rate))
    return logistic.Logistic(np.zeros(width), np.ones(width), w)


def _calibrated(x: np.ndarray, y: np.ndarray, prior: float) -> logistic.Logistic:
    if int(y.sum()) < limits.MIN_TRAIN_POSITIVES or int((~y).sum()) < limits.MIN_TRAIN_POSITIVES:
        return _constant(prior, x.shape[1])
    cut = int(len(y) * (1 - limits.CALIBRATION_FRACTION))
    model = logistic.fit(x[:cut], y[:cut])
    return logistic.platt(model, x[cut:], y[cut:])


def fit(data: Dataset) -> Models:
    """Both models on `data` (its newest MAX_TRAIN_IMPRESSIONS rows, in time order)."""
    keep = slice(max(0, len(data.ts) - limits.MAX_TRAIN_IMPRESSIONS), None)
    x, clicked, bought = data.x[keep], data.clicked[keep], data.bought[keep]
    click_prior = float((clicked.sum() + 1.0) / (len(clicked) + 2.0))
    buy_prior = float((bought.sum() + 1.0) / (clicked.sum() + 2.0))
    click = _calibrated(x[:, : len(CLICK_FEATURES)], clicked, click_prior)
    buy = _calibrated(x[clicked], bought[clicked], buy_prior)
    return Models(click, buy, click_prior, buy_prior, len(clicked), int(clicked.sum()), int(bought.sum()))


@dataclass(slots=True)
class Predictor:
    """The models and the feature state of one retrain: what serving asks."""

    models: Models
    state: FeatureState
    trained_at: float

    def predict(self, user: str, products: Sequence[str], now: float) -> tuple[np.ndarray, np.ndarray]:
        """P(click) and P(purchase) of showing each product to `user` now (on the stream of their
        open session, if any)."""
        if not products:
            return np.zeros(0), np.zeros(0)
        session = self.state.sessions.get(user)
        stream = session.stream if session is not None else ""
        x = np.vstack([self.state.features(user, p, stream, now) for p in products])
        return self.models.predict(x)


def train(events: Sequence[Event], now: float) -> Predictor:
    """Retrain from the stored events (a worker thread, on a timer)."""
    similar = stream_similarity(events)
    data, state = extract(events, similar)
    return Predictor(fit(data), state, now)


def evaluate(
    train_events: Sequence[Event], test_events: Sequence[Event], truth: dict[str, tuple[float, float]] | None = None
) -> dict[str, dict[str, float]]:
    """AUC and log-loss on the test impressions of the models fitted on the training ones,
    of the prior (the training rate) and, with `truth` (impression id → true P(click),
    P(purchase | click)), of the generator's own probabilities (the ceiling). Keys: click
    (over impressions), purchase (P(purchase) over impressions), buy_given_click (over
    clicked test impressions)."""
    similar = stream_similarity(train_events)
    data, _ = extract([*train_events, *test_events], similar)
    cut = max((e.ts for e in train_events), default=0.0)
    train_rows = data.ts <= cut
    test = ~train_rows
    models = fit(Dataset(data.x[train_rows], data.clicked[train_rows], data.bought[train_rows], data.ts[train_rows]))
    p_click, p_purchase = models.predict(data.x[test])
    ids = [i for i, t in zip(data.ids, test) if t]
    y_click, y_buy = data.clicked[test], data.bought[test]
    p_buy_given = models.buy.predict(data.x[test])
    out: dict[str, dict[str, float]] = {}
    prior_purchase = models.click_prior * models.buy_prior
    for name, y, p, prior, mask in (
        ("click", y_click, p_click, models.click_prior, np.ones(len(y_click), dtype=bool)),
        ("purchase", y_buy, p_purchase, prior_purchase, np.ones(len(y_click), dtype=bool)),
        ("buy_given_click", y_buy, p_buy_given, models.buy_prior, y_click),
    ):
        yy, pp = y[mask], p[mask]
        row = {
            "rows": float(mask.sum()),
            "positives": float(yy.sum()),
            "auc": logistic.auc(yy, pp),
            "log_loss": logistic.log_loss(yy, pp),
            "prior_auc": 0.5,
            "prior_log_loss": logistic.log_loss(yy, np.full(len(yy), prior)),
        }
        if truth is not None:
            t_click = np.array([truth[i][0] for i in ids])
            t_buy = np.array([truth[i][1] for i in ids])
            tp = {"click": t_click, "purchase": t_click * t_buy, "buy_given_click": t_buy}[name][mask]
            row["ceiling_auc"] = logistic.auc(yy, tp)
            row["ceiling_log_loss"] = logistic.log_loss(yy, tp)
        out[name] = row
    out["train"] = {"rows": float(models.rows), "clicks": float(models.clicks), "purchases": float(models.purchases)}
    return out
