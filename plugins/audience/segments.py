"""Audience segments (K-means over behaviour features, k chosen by silhouette) and "bought
together" basket rules (Apriori on order baskets). Sans-I/O, numpy, seeded.

**Behaviour features** per user (each log1p, then standardised): watch minutes, watch
sessions, likes, comments, gifts, spend (orders and gifts, minor units), orders, clicks; and
their tastes: the first TASTE_FACTORS components of a truncated SVD of the row-normalised
users × streams implicit-feedback matrix (the event model has no product categories, so
the streams a user watches stand for them; the factors are what the streams share).

**K-means**: k-means++ initialisation from a seeded generator, Lloyd iterations until no point
moves (at most KMEANS_ITERATIONS), the best of KMEANS_RESTARTS runs, for every k in K_RANGE; the k with the best mean
silhouette (on a seeded sample of SILHOUETTE_SAMPLE users) wins.

**Baskets**: one user's orders within BASKET_WINDOW of the basket's first order. Apriori: the
products in at least MIN_PAIR_BASKETS baskets, then the pairs of those in at least as many;
a rule A → B is kept when confidence = baskets(A, B) / baskets(A) ≥ MIN_CONFIDENCE; lift =
confidence / (baskets(B) / baskets)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from . import cf, limits
from .events import Event, Kind

ACTIVITY = ("watch_minutes", "sessions", "likes", "comments", "gifts", "spend", "orders", "clicks")


def behaviour(events: Iterable[Event]) -> tuple[list[str], np.ndarray, list[str]]:
    """(users, their feature rows, the feature names), users in first-seen order."""
    users: dict[str, int] = {}
    counts: list[list[float]] = []
    table = cf.Interactions()
    column = {Kind.WATCH_START: 1, Kind.LIKE: 2, Kind.COMMENT: 3, Kind.GIFT: 4, Kind.ORDER: 6, Kind.CLICK: 7}
    for e in events:
        u = users.get(e.user)
        if u is None:
            if len(users) >= limits.MAX_SEGMENT_USERS:
                continue
            u = users[e.user] = len(counts)
            counts.append([0.0] * len(ACTIVITY))
        row = counts[u]
        if e.kind is Kind.WATCH_STOP:
            row[0] += e.duration / 60.0
        if e.kind in column:
            row[column[e.kind]] += 1.0
        if e.kind in (Kind.ORDER, Kind.GIFT):
            row[5] += e.value
        ws, _ = cf.weights(e)
        if ws > 0:
            table.add(e.user, e.stream, ws, e.ts)
    names = list(users)
    x = np.log1p(np.array(counts, dtype=np.float64).reshape(len(names), len(ACTIVITY)))
    taste = _taste(table, names)
    feature_names = [*ACTIVITY, *(f"taste{i}" for i in range(taste.shape[1]))]
    return names, np.hstack([x, taste]), feature_names


def _taste(table: cf.Interactions, names: Sequence[str]) -> np.ndarray:
    x = table.matrix()
    k = min(limits.TASTE_FACTORS, min(x.shape) - 1) if x.nnz else 0
    out = np.zeros((len(names), max(k, 0)))
    if k < 1:
        return out
    xn = cf.row_normalised(sp.csr_matrix(x, dtype=np.float64))
    u, s, _ = svds(xn, k=k, random_state=0)
    factors = u * s
    for r, name in enumerate(names):
        row = table.users.get(name)
        if row is not None:
            out[r] = factors[row]
    return out


def standardise(x: np.ndarray) -> np.ndarray:
    scale = x.std(axis=0)
    return np.asarray((x - x.mean(axis=0)) / np.where(scale > 1e-12, scale, 1.0))


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.asarray(np.maximum((x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :], 0.0))


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, centroids, inertia) of k-means with k-means++ initialisation."""
    n = len(x)
    centroids = [x[int(rng.integers(n))]]
    d2 = _sq_dist(x, np.array(centroids)).min(axis=1)
    for _ in range(1, k):
        total = float(d2.sum())
        i = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        centroids.append(x[i])
        d2 = np.minimum(d2, _sq_dist(x, x[i : i + 1])[:, 0])
    c = np.array(centroids)
    labels = np.full(n, -1)
    for _ in range(limits.KMEANS_ITERATIONS):
        new = _sq_dist(x, c).argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            if len(members):
                c[j] = members.mean(axis=0)
    inertia = float(_sq_dist(x, c)[np.arange(n), labels].sum())
    return labels, c, inertia


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette: per point (b - a) / max(a, b), a the mean distance to its own cluster,
    b to the nearest other cluster (points alone in their cluster count 0)."""
    d = np.sqrt(_sq_dist(x, x))
    ks = np.unique(labels)
    if len(ks) < 2:
        return 0.0
    means = np.stack([d[:, labels == k].mean(axis=1) for k in ks], axis=1)
    sizes = np.array([(labels == k).sum() for k in ks])
    own = np.searchsorted(ks, labels)
    n_own = sizes[own]
    a = means[np.arange(len(x)), own] * n_own / np.maximum(n_own - 1, 1)
    means[np.arange(len(x)), own] = np.inf
    b = means.min(axis=1)
    s = np.where(n_own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


@dataclass(slots=True)
class Segmentation:
    labels: dict[str, int]
    k: int
    silhouettes: dict[int, float]
    sizes: list[int]
    features: list[str] = field(default_factory=list)
    centroids: list[list[float]] = field(default_factory=list)
    """In the standardised feature space."""


def fit(events: Iterable[Event], seed: int = 0, k_range: tuple[int, int] = limits.K_RANGE) -> Segmentation:
    """Segments of every user in `events`: k-means for each k in k_range, the best silhouette."""
    names, raw, features = behaviour(events)
    if len(names) < 3:
        return Segmentation({n: 0 for n in names}, 1, {}, [len(names)], features)
    x = standardise(raw)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(x), size=min(len(x), limits.SILHOUETTE_SAMPLE), replace=False)
    best: tuple[float, int, np.ndarray, np.ndarray] | None = None
    scores: dict[int, float] = {}
    for k in range(k_range[0], min(k_range[1], len(x) - 1) + 1):
        runs = [kmeans(x, k, np.random.default_rng([seed, k, r])) for r in range(limits.KMEANS_RESTARTS)]
        labels, centroids, _ = min(runs, key=lambda run: run[2])
        scores[k] = silhouette(x[sample], labels[sample])
        if best is None or scores[k] > best[0]:
            best = (scores[k], k, labels, centroids)
    if best is None:
        return Segmentation({n: 0 for n in names}, 1, {}, [len(names)], features)
    _, k, labels, centroids = best
    return Segmentation(
        {n: int(label) for n, label in zip(names, labels)},
        k,
        scores,
        [int((labels == j).sum()) for j in range(k)],
        features,
        centroids.round(4).tolist(),
    )


# Basket rules ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rule:
    product: str
    """The consequent: bought in the baskets with the antecedent."""
    baskets: int
    confidence: float
    lift: float


def baskets(events: Iterable[Event]) -> list[frozenset[str]]:
    """Order baskets: one user's orders within BASKET_WINDOW of the basket's first order."""
    open_: dict[str, tuple[float, set[str]]] = {}
    out: list[frozenset[str]] = []
    for e in sorted((e for e in events if e.kind is Kind.ORDER and e.product), key=lambda e: e.ts):
        current = open_.get(e.user)
        if current is None or e.ts - current[0] > limits.BASKET_WINDOW:
            if current is not None:
                out.append(frozenset(current[1]))
            current = open_[e.user] = (e.ts, set())
        if len(current[1]) < limits.MAX_BASKET_ITEMS:
            current[1].add(e.product)
    out.extend(frozenset(items) for _, items in open_.values())
    return out


def bought_together(
    groups: Sequence[frozenset[str]],
    min_baskets: int = limits.MIN_PAIR_BASKETS,
    min_confidence: float = limits.MIN_CONFIDENCE,
) -> dict[str, list[Rule]]:
    """Per product A the rules A → B (Apriori over pairs), best confidence first."""
    n = len(groups)
    single = Counter(p for basket in groups for p in basket)
    frequent = {p for p, c in single.items() if c >= min_baskets}
    pairs: Counter[tuple[str, str]] = Counter()
    for basket in groups:
        items = sorted(p for p in basket if p in frequent)
        pairs.update(combinations(items, 2))
    rules: dict[str, list[Rule]] = {}
    for (a, b), together in pairs.items():
        if together < min_baskets:
            continue
        for x, y in ((a, b), (b, a)):
            confidence = together / single[x]
            if confidence >= min_confidence:
                lift = confidence / (single[y] / n)
                rules.setdefault(x, []).append(Rule(y, together, round(confidence, 6), round(lift, 4)))
    for x in rules:
        rules[x].sort(key=lambda r: (-r.confidence, -r.lift, r.product))
        del rules[x][limits.TOP_N :]
    return rules


def describe(seg: Segmentation) -> dict[str, object]:
    return {
        "k": seg.k,
        "silhouette": {str(k): round(v, 4) for k, v in seg.silhouettes.items()},
        "sizes": seg.sizes,
        "users": len(seg.labels),
        "best_silhouette": round(seg.silhouettes.get(seg.k, math.nan), 4) if seg.silhouettes else None,
    }
