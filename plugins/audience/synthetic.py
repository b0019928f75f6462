"""A seeded synthetic behaviour log with planted taste clusters (sans-I/O), for the offline
evaluation (`mediacore-bench recs`) and the tests.

Users belong to one of `clusters` taste clusters; each cluster has its own streams and
products (with Zipf popularity inside the cluster and across the whole catalogue). A session
picks a stream of the user's cluster with probability `loyalty`, else any stream by global
popularity; the viewer watches (longer when in taste), may like, comment, gift, sees product
cards of the stream's lineup, clicks and buys with known probabilities (kept with each
impression: the ceiling of any click / purchase model)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .events import Event, Kind

START = 1_700_000_000.0
DAY = 86400.0
CLICK_EFFECT_MEAN = 2.0
"""Where a larger scale of the planted click effects is centred (their mean at scale 1,
mostly in-taste cards, plus the spread the per-user bias adds): the click rate stays at the
default log's 30 % instead of rising with the scale (74 % at 2.5 without it)."""
MODEL_SIGNAL = 3.0
"""Scale of the planted click and purchase effects in the log the CTR and conversion models
are evaluated on (`mediacore-bench recs`). At 1 (the behaviour log of the recommenders'
evaluation) the generator's own probabilities cap CTR AUC at 0.68 (a per-user bias and a
click probability that depends on the whole session's watch time, unknown when the card is
shown), so the CTR goal (AUC ≥ 0.75) could not be reached by any model; at 3 the ceiling is
0.86 and the click rate still 30 % (seed 7, 1,200 users)."""


@dataclass(slots=True)
class Impression:
    event: Event
    features: tuple[float, ...]
    """(in-taste, product popularity rank share, price level, watch minutes so far)"""
    p_click: float
    clicked: bool
    p_buy: float
    """P(purchase | click)."""
    bought: bool


@dataclass(slots=True)
class SyntheticLog:
    events: list[Event]
    user_cluster: dict[str, int]
    stream_cluster: dict[str, int]
    product_cluster: dict[str, int]
    impressions: list[Impression] = field(default_factory=list)


def _sigmoid(z: float) -> float:
    return float(1.0 / (1.0 + np.exp(-z)))


def generate(
    seed: int = 7,
    users: int = 1200,
    clusters: int = 8,
    streams_per_cluster: int = 20,
    products_per_cluster: int = 80,
    days: float = 14.0,
    sessions: float = 12.0,
    loyalty: float = 0.8,
    start: float = START,
    signal: float = 1.0,
) -> SyntheticLog:
    """`signal` scales every planted effect on clicks and purchases (not their base rates):
    larger makes the outcomes more predictable (a higher ceiling); see MODEL_SIGNAL."""
    rng = np.random.default_rng(seed)
    n_streams = clusters * streams_per_cluster
    n_products = clusters * products_per_cluster
    stream_cluster = {f"s{i}": i % clusters for i in range(n_streams)}
    product_cluster = {f"p{i}": i % clusters for i in range(n_products)}
    # Global Zipf popularity over the shuffled catalogue (so popularity crosses clusters).
    s_pop = 1.0 / np.arange(1, n_streams + 1) ** 0.9
    rng.shuffle(s_pop)
    p_pop = 1.0 / np.arange(1, n_products + 1) ** 0.8
    rng.shuffle(p_pop)
    price = rng.uniform(0.0, 1.0, n_products)
    streams_of = [np.array([i for i in range(n_streams) if i % clusters == c]) for c in range(clusters)]
    products_of = [np.array([i for i in range(n_products) if i % clusters == c]) for c in range(clusters)]
    lineup = {
        s: rng.choice(products_of[s % clusters], size=12, replace=False, p=_norm(p_pop[products_of[s % clusters]]))
        for s in range(n_streams)
    }
    events: list[Event] = []
    impressions: list[Impression] = []
    user_cluster: dict[str, int] = {}
    counter = 0

    def event(kind: Kind, user: str, ts: float, **kw: object) -> Event:
        nonlocal counter
        counter += 1
        e = Event(f"e{seed}-{counter}", kind, user, ts, **kw)  # type: ignore[arg-type]
        events.append(e)
        return e

    for u in range(users):
        user = f"u{u}"
        c = int(rng.integers(clusters))
        user_cluster[user] = c
        bias = rng.normal(0.0, 0.5)
        for _ in range(max(1, int(rng.poisson(sessions)))):
            ts = start + float(rng.uniform(0.0, days * DAY))
            if rng.random() < loyalty:
                s = int(rng.choice(streams_of[c], p=_norm(s_pop[streams_of[c]])))
            else:
                s = int(rng.choice(n_streams, p=_norm(s_pop)))
            stream = f"s{s}"
            taste = s % clusters == c
            minutes = float(rng.exponential(12.0 if taste else 2.0))
            event(Kind.WATCH_START, user, ts, stream=stream)
            if taste and rng.random() < 0.3:
                event(Kind.LIKE, user, ts + 30, stream=stream)
            if taste and rng.random() < 0.15:
                event(Kind.COMMENT, user, ts + 40, stream=stream)
            if taste and rng.random() < 0.03:
                event(Kind.GIFT, user, ts + 50, stream=stream, value=float(rng.integers(100, 1000)))
            cards = rng.choice(lineup[s], size=min(3, 1 + int(minutes // 4)), replace=False)
            for k, p in enumerate(cards):
                product = f"p{p}"
                t = ts + 60 + 60 * k
                in_taste = 1.0 if int(p) % clusters == c else 0.0
                pop_share = float(p_pop[p] / p_pop.max())
                feats = (in_taste, pop_share, float(price[p]), min(minutes, 60.0) / 60.0)
                p_click = _sigmoid(
                    -2.6
                    - (signal - 1.0) * CLICK_EFFECT_MEAN
                    + signal * (1.8 * in_taste + 1.2 * pop_share - 0.6 * price[p] + 1.0 * feats[3] + bias)
                )
                p_buy = _sigmoid(-1.2 + signal * (1.0 * in_taste - 1.6 * price[p] + 0.5 * bias))
                imp = event(Kind.CARD_IMPRESSION, user, t, stream=stream, product=product)
                clicked = bool(rng.random() < p_click)
                bought = False
                if clicked:
                    event(Kind.CLICK, user, t + 5, stream=stream, product=product)
                    if rng.random() < 0.5:
                        event(Kind.ADD_TO_CART, user, t + 20, stream=stream, product=product)
                    bought = bool(rng.random() < p_buy)
                    if bought:
                        event(
                            Kind.ORDER,
                            user,
                            t + 40,
                            stream=stream,
                            product=product,
                            value=float(round(1000 + 9000 * price[p])),
                        )
                impressions.append(Impression(imp, feats, p_click, clicked, p_buy, bought))
            event(Kind.WATCH_STOP, user, ts + minutes * 60, stream=stream, duration=minutes * 60)
    events.sort(key=lambda e: e.ts)
    impressions.sort(key=lambda i: i.event.ts)
    return SyntheticLog(events, user_cluster, stream_cluster, product_cluster, impressions)


def _norm(w: np.ndarray) -> np.ndarray:
    return np.asarray(w / w.sum())
