"""Collaborative filtering over implicit feedback (sans-I/O): user-based and item-based
cosine with scipy sparse matrices, popularity for cold start, "also bought".

Events become weighted (user, item) interactions, one matrix per kind (streams, products)
plus one of orders (baskets, for "also bought"). `Recommender.ingest()` only queues events
(O(1)); `refresh()` (on a timer, in a thread of the recommender's own process:
refresher.py) applies the queue to the
interaction tables incrementally, rebuilds the similarity and precomputes every user's top
TOP_N, so a request is a dictionary lookup. Deletions and the retention window go through
the same queue, so only `refresh()` ever mutates the tables."""

from __future__ import annotations

import collections
import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from . import limits
from .events import Event, Kind

DAY = 86400.0

STREAM_WEIGHTS: dict[Kind, float] = {
    Kind.WATCH_START: 1.0,
    Kind.LIKE: 1.0,
    Kind.COMMENT: 0.5,
    Kind.GIFT: 3.0,
    Kind.CLICK: 0.5,
    Kind.ORDER: 1.0,
}
"""Implicit feedback for the stream an event happened on; WATCH_STOP adds its duration
(WATCH_MINUTES_PER_UNIT minutes count 1, at most WATCH_CAP)."""
WATCH_MINUTES_PER_UNIT = 10.0
WATCH_CAP = 3.0

PRODUCT_WEIGHTS: dict[Kind, float] = {
    Kind.CLICK: 1.0,
    Kind.ADD_TO_CART: 2.0,
    Kind.ORDER: 4.0,
    Kind.COUPON_REDEEMED: 2.0,
}
"""Implicit feedback for the event's product (an impression is exposure, not preference)."""

KINDS = ("stream", "product")
METHODS = ("item", "user", "blend")


def weights(event: Event) -> tuple[float, float]:
    """(stream weight, product weight) of one event."""
    ws = STREAM_WEIGHTS.get(event.kind, 0.0)
    if event.kind is Kind.WATCH_STOP:
        ws = min(event.duration / 60.0 / WATCH_MINUTES_PER_UNIT, WATCH_CAP)
    return (ws if event.stream else 0.0, PRODUCT_WEIGHTS.get(event.kind, 0.0) if event.product else 0.0)


Record = tuple[str, float, str, str, float, str, float, bool]
"""An event as the recommender keeps it until the next refresh: (id, ts, user, stream,
stream weight, product, product weight, is an order). Only strings, floats and a bool: the
garbage collector stops tracking such a tuple at its first young collection, so a second of
queued events (50,000 at the goal's rate) does not pile up in the oldest generation and
trigger full collections that stall the event loop (they took 50 to 110 ms every second
when the queue held the `Event` objects)."""


def record(event: Event) -> Record:
    ws, wp = weights(event)
    return (event.id, event.ts, event.user, event.stream, ws, event.product, wp, event.kind is Kind.ORDER)


class RecentIds:
    """The ids of the last `capacity / 2` to `capacity` events, to ignore one delivered again:
    two sets, the older dropped whole when the newer is full (no per-id bookkeeping)."""

    def __init__(self, capacity: int) -> None:
        self.half = max(1, capacity // 2)
        self._new: set[str] = set()
        self._old: set[str] = set()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._new or event_id in self._old

    def update(self, ids: list[str]) -> None:
        i = 0
        while i < len(ids):
            if len(self._new) >= self.half:
                self._old, self._new = self._new, set()
            room = self.half - len(self._new)
            self._new.update(ids[i : i + room])
            i += room


class Interactions:
    """Weighted (user, item) pairs, kept per day so the retention window can take days off."""

    def __init__(self) -> None:
        self.users: dict[str, int] = {}
        self.user_names: list[str] = []
        self.items: dict[str, int] = {}
        self.item_names: list[str] = []
        self.total: dict[tuple[int, int], float] = {}
        self.by_day: dict[int, dict[tuple[int, int], float]] = {}

    def add(self, user: str, item: str, weight: float, ts: float) -> None:
        u = self.users.get(user)
        if u is None:
            if len(self.users) >= limits.MAX_USERS:
                return
            u = self.users[user] = len(self.user_names)
            self.user_names.append(user)
        i = self.items.get(item)
        if i is None:
            if len(self.items) >= limits.MAX_ITEMS:
                return
            i = self.items[item] = len(self.item_names)
            self.item_names.append(item)
        key = (u, i)
        self.total[key] = self.total.get(key, 0.0) + weight
        day = self.by_day.setdefault(int(ts // DAY), {})
        day[key] = day.get(key, 0.0) + weight

    def expire(self, before: float) -> None:
        for d in [d for d in self.by_day if (d + 1) * DAY <= before]:
            for key, w in self.by_day.pop(d).items():
                left = self.total.get(key, 0.0) - w
                if left <= 1e-9:
                    self.total.pop(key, None)
                else:
                    self.total[key] = left

    def forget(self, user: str) -> None:
        u = self.users.pop(user, None)
        if u is None:
            return
        self.user_names[u] = ""
        for table in (self.total, *self.by_day.values()):
            for key in [k for k in table if k[0] == u]:
                del table[key]

    def matrix(self) -> sp.csr_matrix:
        n, m = len(self.user_names), len(self.item_names)
        if not self.total:
            return sp.csr_matrix((n, m), dtype=np.float64)
        keys = np.fromiter((k for pair in self.total for k in pair), dtype=np.int64, count=2 * len(self.total))
        values = np.fromiter(self.total.values(), dtype=np.float64, count=len(self.total))
        return sp.csr_matrix((values, (keys[0::2], keys[1::2])), shape=(n, m))


# Scoring (pure: the evaluation calls these too) ---------------------------------------------
def item_similarity(x: sp.csr_matrix) -> sp.csr_matrix:
    """Item × item cosine of the columns of x, diagonal zero."""
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
    norms[norms == 0] = 1.0
    xn = sp.csr_matrix(x @ sp.diags(1.0 / norms))
    s = sp.csr_matrix(xn.T @ xn)
    s.setdiag(0.0)
    s.eliminate_zeros()
    return s


def item_cf(x: sp.csr_matrix, sim: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Scores (len(rows) × items): a user's history times the item similarity."""
    return np.asarray((x[rows] @ sim).todense())


def user_cf(x: sp.csr_matrix, xn: sp.csr_matrix, rows: np.ndarray, k: int = limits.NEIGHBOURS) -> np.ndarray:
    """Scores (len(rows) × items): the histories of each user's k most similar users (cosine
    of the row-normalised `xn`), weighted by similarity."""
    sim = sp.csr_matrix(xn[rows] @ xn.T)
    data, indices, indptr = [], [], [0]
    for r, u in enumerate(rows):
        lo, hi = sim.indptr[r], sim.indptr[r + 1]
        cols, vals = sim.indices[lo:hi], sim.data[lo:hi]
        keep = cols != u
        cols, vals = cols[keep], vals[keep]
        if len(vals) > k:
            top = np.argpartition(-vals, k)[:k]
            cols, vals = cols[top], vals[top]
        indices.append(cols)
        data.append(vals)
        indptr.append(indptr[-1] + len(cols))
    neighbours = sp.csr_matrix(
        (np.concatenate(data) if data else [], np.concatenate(indices) if indices else [], indptr),
        shape=(len(rows), x.shape[0]),
    )
    return np.asarray((neighbours @ x).todense())


def row_normalised(x: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ x)


def blend(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each method's scores scaled to a row maximum of 1, summed."""

    def scaled(s: np.ndarray) -> np.ndarray:
        top = s.max(axis=1, keepdims=True)
        top[top <= 0] = 1.0
        return s / top

    return scaled(a) + scaled(b)


def top_n(scores: np.ndarray, n: int) -> list[list[tuple[int, float]]]:
    """Per row the n best columns with a positive score, best first."""
    out: list[list[tuple[int, float]]] = []
    n = min(n, scores.shape[1])
    for row in scores:
        if n <= 0:
            out.append([])
            continue
        idx = np.argpartition(-row, n - 1)[:n] if n < len(row) else np.arange(len(row))
        idx = idx[np.argsort(-row[idx], kind="stable")]
        out.append([(int(i), float(row[i])) for i in idx if row[i] > 0])
    return out


def scores(
    x: sp.csr_matrix,
    rows: np.ndarray,
    method: str,
    sim: sp.csr_matrix | None = None,
    xn: sp.csr_matrix | None = None,
    exclude_seen: bool = True,
) -> np.ndarray:
    """Scores of `method` (item, user, blend) for `rows`, seen items at -1 when excluded."""
    if method == "item" or method == "blend":
        s_item = item_cf(x, item_similarity(x) if sim is None else sim, rows)
    if method == "user" or method == "blend":
        s_user = user_cf(x, row_normalised(x) if xn is None else xn, rows)
    s = s_item if method == "item" else s_user if method == "user" else blend(s_item, s_user)
    if exclude_seen:
        seen = x[rows].nonzero()
        s[seen] = -1.0
    return s


def popularity(x: sp.csr_matrix) -> np.ndarray:
    """Distinct users per item (ties broken by total weight)."""
    users = np.asarray((x > 0).sum(axis=0)).ravel().astype(np.float64)
    weight = np.asarray(x.sum(axis=0)).ravel()
    return users + weight / (1.0 + weight.max(initial=0.0)) * 0.5


# The recommender -----------------------------------------------------------------------------
@dataclass(slots=True)
class KindModel:
    top: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    """User → best TOP_N items with scores (already seen products excluded)."""
    popular: list[tuple[str, float]] = field(default_factory=list)
    segment_popular: dict[int, list[tuple[str, float]]] = field(default_factory=dict)


class Recommender:
    def __init__(self, method: str = "blend", retention: float = 30 * DAY) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}")
        self.method = method
        self.retention = retention
        self.tables = {"stream": Interactions(), "product": Interactions(), "basket": Interactions()}
        self.exclude_seen = {"stream": False, "product": True}
        self.models: dict[str, KindModel] = {k: KindModel() for k in KINDS}
        self.also: dict[str, list[tuple[str, float]]] = {}
        self.segments: dict[str, int] = {}
        self.version = 0
        self.events_applied = 0
        self._ops: deque[tuple[str, object]] = deque()
        self._recent = RecentIds(limits.RECENT_IDS)
        self._lock = threading.Lock()

    # Called on the event loop: O(1) each -----------------------------------------------------
    def ingest(self, events: Iterable[Event]) -> None:
        self.ingest_records([record(e) for e in events])

    def ingest_records(self, records: Sequence[Record]) -> None:
        if records:
            self._ops.append(("events", list(records)))

    def forget(self, user: str) -> None:
        """Remove the user's rows now from what is served, and from the tables at the next refresh."""
        self._ops.append(("forget", user))
        for model in self.models.values():
            model.top.pop(user, None)
        self.segments.pop(user, None)

    def expire(self, before: float) -> None:
        self._ops.append(("expire", before))

    def set_segments(self, segments: dict[str, int]) -> None:
        """New K-means segments: the next refresh rebuilds the segment popularity lists."""
        self.segments = dict(segments)
        self._ops.append(("segments", None))

    @property
    def dirty(self) -> bool:
        return bool(self._ops)

    def recommend(self, user: str, kind: str, n: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """Up to n (item, score): the user's precomputed list, then segment or global popularity
        (cold start); only items in `allowed` when given (live streams)."""
        model = self.models[kind]
        out: list[tuple[str, float]] = []
        taken: set[str] = set()
        segment = self.segments.get(user)
        fill = model.segment_popular.get(segment, []) if segment is not None else []
        for source in (model.top.get(user, []), fill, model.popular):
            for item, score in source:
                if len(out) >= n:
                    return out
                if item in taken or (allowed is not None and item not in allowed):
                    continue
                taken.add(item)
                out.append((item, score))
        return out

    def also_bought(self, product: str, n: int) -> list[tuple[str, float]]:
        return self.also.get(product, [])[:n]

    def holds(self, user: str) -> bool:
        """Whether any table, served list or segment still has the user (the privacy check)."""
        return (
            any(user in table.users for table in self.tables.values())
            or any(user in model.top for model in self.models.values())
            or user in self.segments
        )

    # Called in a worker thread on a timer ------------------------------------------------------
    def refresh(self, now: float) -> bool:
        """Apply queued events and deletions, rebuild the models. False when nothing changed."""
        with self._lock:
            if not self._ops:
                return False
            self._apply_ops(now)
            models = {kind: self._build(kind) for kind in KINDS}
            also = self._build_also()
            self.models, self.also = models, also
            self.version += 1
            return True

    def _apply_ops(self, now: float) -> None:
        run: list[Record] = []  # events since the last deletion or expiry, applied together
        while self._ops:
            op, arg = self._ops.popleft()
            if op == "events":
                assert isinstance(arg, list)
                run += arg
                continue
            self._apply_events(run, now)
            run = []
            if op == "forget":
                assert isinstance(arg, str)
                for table in self.tables.values():
                    table.forget(arg)
            elif op == "expire":
                assert isinstance(arg, float)
                for table in self.tables.values():
                    table.expire(arg)
        self._apply_events(run, now)

    def _apply_events(self, records: list[Record], now: float) -> None:
        """Add the weights of `records` (ids not seen before, inside the retention window),
        summed per (user, item, day) first: one table update per pair and day instead of
        one per event. The refresh thread holds the GIL while it runs, and the event loop
        waits for it; at 50,000 events/s the per-event loop took 60 to 70 ms a second."""
        cutoff = now - self.retention
        recent = self._recent
        fresh = list({r[0]: r for r in reversed(records) if r[1] >= cutoff and r[0] not in recent}.values())
        recent.update([r[0] for r in fresh])
        self.events_applied += len(fresh)
        sums: dict[str, collections.defaultdict[tuple[str, str, int], float]] = {
            name: collections.defaultdict(float) for name in ("stream", "product", "basket")
        }
        for _, ts, user, stream, ws, product, wp, order in fresh:
            day = int(ts // DAY)
            if ws > 0:
                sums["stream"][(user, stream, day)] += ws
            if wp > 0:
                sums["product"][(user, product, day)] += wp
            if order and product:
                sums["basket"][(user, product, day)] += 1.0
        for name, summed in sums.items():
            table = self.tables[name]
            for (user, item, day), weight in summed.items():
                table.add(user, item, weight, day * DAY)

    def _build(self, kind: str) -> KindModel:
        table = self.tables[kind]
        x = table.matrix()
        model = KindModel()
        if x.nnz == 0:
            return model
        pop = popularity(x)
        order = np.argsort(-pop, kind="stable")[: limits.TOP_N]
        model.popular = [(table.item_names[i], float(pop[i])) for i in order if pop[i] > 0]
        if self.segments:
            model.segment_popular = self._segment_popular(table, x)
        active = np.flatnonzero(np.diff(x.indptr))
        sim = item_similarity(x) if self.method != "user" else None
        xn = row_normalised(x) if self.method != "item" else None
        for lo in range(0, len(active), limits.USER_CHUNK):
            rows = active[lo : lo + limits.USER_CHUNK]
            s = scores(x, rows, self.method, sim, xn, self.exclude_seen[kind])
            for u, best in zip(rows, top_n(s, limits.TOP_N)):
                model.top[table.user_names[u]] = [(table.item_names[i], round(v, 6)) for i, v in best]
        return model

    def _segment_popular(self, table: Interactions, x: sp.csr_matrix) -> dict[int, list[tuple[str, float]]]:
        out: dict[int, list[tuple[str, float]]] = {}
        segments = self.segments
        labels = np.array([segments.get(name, -1) for name in table.user_names])
        for segment in set(labels.tolist()) - {-1}:
            rows = np.flatnonzero(labels == segment)
            if len(rows) == 0:
                continue
            pop = popularity(x[rows])
            order = np.argsort(-pop, kind="stable")[: limits.TOP_N]
            out[segment] = [(table.item_names[i], float(pop[i])) for i in order if pop[i] > 0]
        return out

    def _build_also(self) -> dict[str, list[tuple[str, float]]]:
        table = self.tables["basket"]
        x = table.matrix()
        if x.nnz == 0:
            return {}
        sim = item_similarity(x).tocsr()
        out = {}
        for i, name in enumerate(table.item_names):
            lo, hi = sim.indptr[i], sim.indptr[i + 1]
            cols, vals = sim.indices[lo:hi], sim.data[lo:hi]
            best = np.argsort(-vals, kind="stable")[: limits.TOP_N]
            if len(best):
                out[name] = [(table.item_names[cols[j]], round(float(vals[j]), 6)) for j in best]
        return out


def rank_of(items: Sequence[str], wanted: set[str]) -> int | None:
    """0-based position of the first wanted item, None when absent."""
    for r, item in enumerate(items):
        if item in wanted:
            return r
    return None


def ndcg(items: Sequence[str], wanted: set[str], k: int) -> float:
    dcg = sum(1.0 / math.log2(r + 2) for r, item in enumerate(items[:k]) if item in wanted)
    ideal = sum(1.0 / math.log2(r + 2) for r in range(min(k, len(wanted))))
    return dcg / ideal if ideal else 0.0
