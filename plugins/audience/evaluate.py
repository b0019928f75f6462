"""Offline evaluation of the recommenders (sans-I/O): a time-ordered split of an event log,
HR@k and NDCG@k of user-CF, item-CF, their blend and most-popular, per kind."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import cf
from .events import Event


def split(events: Sequence[Event], fraction: float = 0.8) -> tuple[list[Event], list[Event]]:
    """The oldest `fraction` of the events (by ts) to train on, the rest to test."""
    ordered = sorted(events, key=lambda e: e.ts)
    cut = int(len(ordered) * fraction)
    return ordered[:cut], ordered[cut:]


def evaluate(
    train: Sequence[Event], test: Sequence[Event], kind: str, k: int = 10, methods: Sequence[str] = ("user", "item")
) -> dict[str, dict[str, float]]:
    """Per method {"hr", "ndcg", "users"}: for each user with history in `train` and items of
    `kind` first met in `test`, whether (HR) and how high (NDCG) those items rank in the top k
    of a model trained on `train` (already seen items excluded)."""
    rec = cf.Recommender()
    rec.ingest(train)
    rec._apply_ops(now=max((e.ts for e in train), default=0.0))
    table = rec.tables[kind]
    x = table.matrix()
    truth: dict[int, set[int]] = {}
    for e in test:
        ws, wp = cf.weights(e)
        item, w = (e.stream, ws) if kind == "stream" else (e.product, wp)
        u, i = table.users.get(e.user), table.items.get(item)
        if w <= 0 or u is None or i is None or x[u, i] > 0:
            continue
        truth.setdefault(u, set()).add(i)
    rows = np.array(sorted(truth), dtype=np.int64)
    results: dict[str, dict[str, float]] = {}
    pop = cf.popularity(x)
    for method in (*methods, "popular"):
        hits, gains = 0, 0.0
        for lo in range(0, len(rows), 512):
            chunk = rows[lo : lo + 512]
            if method == "popular":
                s = np.tile(pop, (len(chunk), 1))
                s[x[chunk].nonzero()] = -1.0
            else:
                s = cf.scores(x, chunk, method)
            for u, best in zip(chunk, cf.top_n(s, k)):
                items = [str(i) for i, _ in best]
                wanted = {str(i) for i in truth[int(u)]}
                hits += cf.rank_of(items, wanted) is not None
                gains += cf.ndcg(items, wanted, k)
        n = max(1, len(rows))
        results[method] = {"hr": hits / n, "ndcg": gains / n, "users": float(len(rows))}
    return results
