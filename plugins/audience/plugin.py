"""The audience plugin: behaviour events in, recommendations out.

Events arrive from the engine's viewer hooks (watch start / stop) and from
`POST /api/audience/events` (players and shop backends: likes, comments, gifts, card
impressions, clicks, add-to-carts, orders, coupons). Every event goes through the bounded
`EventWriter` (never waits; full → dropped and counted) into the store: SQLite
(`audience.db` in the data directory) or, with `[audience] redis_url`, a Redis Stream read
by a consumer group. The recommender is fed the stored events and refreshed on a timer in a
process of its own (refresher.py: its work no longer holds this process's GIL); the request
path only looks up its precomputed lists.

Routes: `POST /api/audience/events` (and the WebSocket `/live/STREAM/events`, one message per
batch), `GET /api/recommendations?kind=stream|product&n=10`,
`GET /api/audience/also-bought/{product}`, `DELETE /api/users/me/data`. The commerce
plugin's `POST /api/events` (its per-node funnel counters) stays as it is: plugins see each
other only through HTTP, and that route refuses what the funnel does not count."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import secrets
import socket
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import Counter, Gauge, Histogram

from mediacore.plugins.api import HttpError, IdentityError, PluginContext, PluginError, Role, cancel_and_wait, read_json

from . import conversion, limits, planner, segments
from .cf import DAY, KINDS
from .events import Event, EventError, IdSource, Kind, parse, pseudonym
from .redis_store import RedisEventStore
from .refresher import RecommenderGone, RecommenderProcess
from .settings import AudienceSettings
from .sqlite_store import SqliteEventStore
from .store import EventStore
from .writer import EventWriter

log = logging.getLogger("mediacore.audience")

SQLITE_FILE = "audience.db"
KEY_FILE = "user.key"


def _guarded(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Callable[..., Any]:
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except HttpError as e:
            if e.status == 401:
                e.headers["WWW-Authenticate"] = "Bearer"
            return e.response()
        except web.HTTPException:
            raise
        except Exception:
            log.exception("audience: %s %s failed", request.method, request.path)
            return web.json_response({"error": "unavailable"}, status=503)

    wrapper.__name__ = handler.__name__
    return wrapper


class AudiencePlugin:
    name = "audience"

    def __init__(self) -> None:
        self.settings = AudienceSettings()
        self.store: EventStore | None = None
        self.writer: EventWriter | None = None
        self.recommender = RecommenderProcess("blend", 30 * DAY)
        self.key = b""
        self.new_id = IdSource()
        self._context: PluginContext | None = None
        self._watching: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._refresh_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.predictor: conversion.Predictor | None = None
        self.segmentation: segments.Segmentation | None = None
        self.basket_rules: dict[str, list[segments.Rule]] = {}
        self.uptake: dict[str, planner.Curve] = {}
        self.coupon_history: planner.History = {}
        self.retrains = 0
        self._deleted: set[str] = set()
        """Users deleted while a retrain runs: dropped from its result before it is swapped in."""
        self._retrained = asyncio.Event()
        self._deleted_while_loading: set[str] | None = None
        """Users deleted while a new recommender process is fed the store: forgotten after."""
        self._stopping = False
        """Set at stop: the Redis loops also end on it, since redis-py's read timeout can
        swallow the cancellation of a blocked read (seen at a node's stop: the loop kept
        reading and stop() never returned)."""

    # Start and stop ---------------------------------------------------------------------------
    async def start(self, context: PluginContext) -> None:
        self._context = context
        self._stopping = False
        self.new_id = IdSource()  # drawn here, in the process that serves (after any fork)
        self.settings = settings = AudienceSettings.parse(context.settings)
        if not context.home:
            # Another worker of this machine: every route and hook of this plugin is answered
            # by the home worker, which keeps the one store and model.
            self._register(context)
            log.info("audience: served by the home worker of this machine")
            return
        self.key = settings.user_key.encode() if settings.user_key else self._local_key(context)
        self.store = store = await self._open_store(context, settings)
        self.writer = EventWriter(self._sink, settings.queue_size, settings.batch_size)
        self._metrics(context)
        loop = asyncio.get_running_loop()
        last_applied = "0-0"
        if isinstance(store, RedisEventStore):
            last_applied = await store.last_applied_id()
        await self._start_recommender()
        self._spawn(loop, self.writer.run(), "audience-writer")
        self._spawn(loop, self._refresh_loop(), "audience-refresh")
        self._spawn(loop, self._purge_loop(), "audience-purge")
        self._spawn(loop, self._model_loop(), "audience-models")
        if isinstance(store, RedisEventStore):
            self._spawn(loop, self._consume_loop(store), "audience-consume")
            self._spawn(loop, self._tail_loop(store, last_applied), "audience-tail")
        self._register(context)
        log.info("audience: %s store, %s recommendations", "Redis" if settings.redis_url else "SQLite", settings.method)

    def _register(self, context: PluginContext) -> None:
        add = context.add_route
        add("POST", "/api/audience/events", _guarded(self.post_events))
        # One model of the whole audience: with workers, every worker's events and viewers
        # reach this plugin on the home worker.
        context.add_websocket("/live/{stream}/events", _guarded(self.events_socket), machine=True)
        add("GET", "/api/recommendations", _guarded(self.recommendations))
        add("GET", "/api/audience/also-bought/{product}", _guarded(self.also_bought))
        add("DELETE", "/api/users/me/data", _guarded(self.delete_my_data))
        add("GET", "/api/audience/predict", _guarded(self.predict))
        add("GET", "/api/audience/bought-together/{product}", _guarded(self.bought_together))
        add("GET", "/api/audience/segments", _guarded(self.segments_summary))
        add("POST", "/api/promotions/plan", _guarded(self.plan_promotion))
        context.on_viewer_joined(self._joined, machine=True)
        context.on_viewer_left(self._left, machine=True)

    def _spawn(self, loop: asyncio.AbstractEventLoop, coro: Any, name: str) -> None:
        self._tasks.append(loop.create_task(coro, name=name))

    @staticmethod
    def _local_key(context: PluginContext) -> bytes:
        """The node's pseudonymisation key, made once. Written whole to a temporary file and
        linked into place, so the workers of one server that start together agree on one
        key and none reads a half-written file."""
        path = context.data_dir / KEY_FILE
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=context.data_dir, prefix=".key-")  # mode 0600
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32))
                with contextlib.suppress(FileExistsError):  # another worker's came first
                    os.link(tmp, path)
            finally:
                os.unlink(tmp)
        return path.read_text().strip().encode()

    async def _open_store(self, context: PluginContext, settings: AudienceSettings) -> EventStore:
        if settings.redis_url:
            store = RedisEventStore.from_url(
                settings.redis_url, settings.key_prefix, settings.node_id or socket.gethostname()
            )
            try:
                await store.ensure_group()
            except Exception as e:
                await store.close()
                raise PluginError(f"audience: Redis at audience.redis_url does not answer: {e}") from e
            return store
        path = context.data_dir / SQLITE_FILE
        try:
            return await SqliteEventStore.open(path)
        except Exception as e:
            raise PluginError(f"audience: cannot open {path}: {e}") from e

    def _metrics(self, context: PluginContext) -> None:
        registry = context.registry
        counter = Counter("mediacore_audience_events", "Behaviour events accepted by kind", ["kind"], registry=registry)
        self._accepted_by_kind = {kind: counter.labels(kind.value) for kind in Kind}
        writer = self.writer
        assert writer is not None
        dropped = Gauge(
            "mediacore_audience_events_dropped", "Events dropped because the writer's queue was full", registry=registry
        )
        dropped.set_function(lambda: writer.dropped)
        failed = Gauge(
            "mediacore_audience_events_failed", "Events the store refused after every retry", registry=registry
        )
        failed.set_function(lambda: writer.failed)
        queued = Gauge("mediacore_audience_queue", "Events waiting for the store", registry=registry)
        queued.set_function(lambda: len(writer))
        behind = Gauge(
            "mediacore_audience_recommender_dropped",
            "Events not sent to the recommender process because it did not keep up",
            registry=registry,
        )
        behind.set_function(lambda: self.recommender.dropped)
        self.refresh_seconds = Histogram(
            "mediacore_audience_refresh_seconds",
            "Seconds one model refresh took (in the recommender's process)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )

    async def _start_recommender(self) -> None:
        """A new recommender process, fed the stored events of the retention window and the
        current segments (at the start, and when the last one ended)."""
        assert self._context is not None and self.store is not None
        settings = self.settings
        self.recommender = recommender = RecommenderProcess(settings.method, settings.retention_days * DAY)
        await recommender.start()
        self._deleted_while_loading = deleted = set[str]()
        try:
            recommender.ingest(await self.store.load(self._context.wall_clock() - settings.retention_days * DAY))
        finally:
            self._deleted_while_loading = None
        for user in deleted:
            recommender.forget(user)
        if self.segmentation is not None:
            recommender.set_segments(self.segmentation.labels)
        await self.refresh()

    async def stop(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.writer.flush(), 5.0)
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        await self.recommender.stop()
        if self.store is not None:
            await self.store.close()
            self.store = None

    # The event path ------------------------------------------------------------------------------
    def offer(self, event: Event) -> bool:
        """Queue one event for the store (never waits; False when dropped)."""
        return self.offer_many([event]) == 1

    def offer_many(self, events: list[Event]) -> int:
        """Queue `events` for the store (never waits); returns how many were accepted. The
        metric is counted once per kind per call, not per event (its lock and label lookup
        were a tenth of the event route's time at 50,000 events/s)."""
        assert self.writer is not None
        accepted = self.writer.offer_many(events)
        counts = collections.Counter(e.kind for e in events[:accepted])
        for kind, n in counts.items():
            self._accepted_by_kind[kind].inc(n)
        return accepted

    async def _sink(self, batch: list[Event]) -> None:
        assert self.store is not None
        stored = await self.store.append(batch)
        self.recommender.ingest(stored)

    def _joined(self, stream: str, viewer_key: str) -> None:
        assert self._context is not None
        now = self._context.wall_clock()
        self._watching[(stream, viewer_key)] = now
        if len(self._watching) > limits.OPEN_WATCHES:
            self._watching.popitem(last=False)
        self.offer(Event(self.new_id(), Kind.WATCH_START, pseudonym(self.key, "viewer:" + viewer_key), now, stream))

    def _left(self, stream: str, viewer_key: str) -> None:
        assert self._context is not None
        now = self._context.wall_clock()
        since = self._watching.pop((stream, viewer_key), None)
        duration = min(max(0.0, now - since), limits.MAX_WATCH_SECONDS) if since is not None else 0.0
        user = pseudonym(self.key, "viewer:" + viewer_key)
        self.offer(Event(self.new_id(), Kind.WATCH_STOP, user, now, stream, duration=duration))

    # Timers ----------------------------------------------------------------------------------------
    async def refresh(self) -> bool:
        """Apply the events sent to the models (in the recommender's process, one refresh at a time)."""
        assert self._context is not None
        async with self._refresh_lock:
            start = self._context.clock()
            changed = await self.recommender.refresh(self._context.wall_clock())
            if changed:
                self.refresh_seconds.observe(self._context.clock() - start)
            return changed

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.update_interval)
            try:
                if not self.recommender.alive:
                    log.warning("audience: starting a new recommender process")
                    await self.recommender.stop()
                    await self._start_recommender()
                elif self.recommender.dirty:
                    await self.refresh()
            except Exception:
                log.exception("audience: refreshing the models failed")

    async def retrain(self) -> None:
        """Refit the CTR / conversion models, the segments, the basket rules and the uptake
        curves from the stored events of the retention window (a worker thread), then swap
        them in and save the segments."""
        assert self._context is not None and self.store is not None
        now = self._context.wall_clock()
        self._deleted.clear()
        events = await self.store.load(now - self.settings.retention_days * DAY)
        rate = self.settings.uptake_per_percent

        def fit() -> tuple[
            conversion.Predictor, segments.Segmentation, dict[str, list[segments.Rule]], planner.History
        ]:
            predictor = conversion.train(events, now)
            segmentation = segments.fit(events)
            rules = segments.bought_together(segments.baskets(events))
            return predictor, segmentation, rules, planner.history(events, segmentation.labels)

        start = self._context.clock()
        predictor, segmentation, rules, history = await asyncio.to_thread(fit)
        for user in self._deleted:  # deleted after the load: none of their rows may come back
            predictor.state.forget(user)
            segmentation.labels.pop(user, None)
        self.predictor, self.segmentation, self.basket_rules = predictor, segmentation, rules
        self.coupon_history, self.uptake = history, planner.curves(history, rate)
        with contextlib.suppress(RecommenderGone):  # the next one is given the segments at its start
            self.recommender.set_segments(segmentation.labels)
        saved = dict(segmentation.labels)
        await self.store.save_segments(saved)
        for user in self._deleted & saved.keys():  # deleted while the rows were being saved
            await self.store.delete_user(user)
        self.retrains += 1
        self._retrained.set()
        log.info(
            "audience: models retrained on %d events in %.2f s (%d impressions, k=%d)",
            len(events),
            self._context.clock() - start,
            predictor.models.rows,
            segmentation.k,
        )

    async def _model_loop(self) -> None:
        while True:
            try:
                await self.retrain()
            except Exception:
                log.exception("audience: retraining the models failed")
            await asyncio.sleep(self.settings.model_interval)

    async def _purge_loop(self) -> None:
        assert self._context is not None and self.store is not None
        while True:
            try:
                before = self._context.wall_clock() - self.settings.retention_days * DAY
                await self.store.purge(before)
                if self.recommender.alive:
                    self.recommender.expire(before)
            except Exception:
                log.exception("audience: deleting events past retention failed")
            await asyncio.sleep(limits.PURGE_INTERVAL)

    async def _consume_loop(self, store: RedisEventStore) -> None:
        while not self._stopping:
            try:
                await store.consume()
            except Exception:
                log.exception("audience: consuming the Redis event stream failed")
                await asyncio.sleep(1.0)

    async def _tail_loop(self, store: RedisEventStore, last_id: str) -> None:
        while not self._stopping:
            try:
                last_id, events = await store.tail(last_id)
                self.recommender.ingest(events)
            except Exception:
                log.exception("audience: reading applied events from Redis failed")
                await asyncio.sleep(1.0)

    # Routes ---------------------------------------------------------------------------------------
    def _caller(self, request: web.Request) -> tuple[str, Role]:
        assert self._context is not None
        try:
            who = self._context.identity(request)
        except IdentityError as e:
            raise HttpError(401, "unauthorized", str(e)) from None
        if who is None:
            raise HttpError(401, "unauthorized", "a bearer token is required")
        return pseudonym(self.key, who.sub), who.role

    def _accept(self, data: Any, user: str) -> dict[str, int]:
        """One POST body or WebSocket message of events for `user`: `{"events": [EVENT, ...]}`
        or one EVENT → {accepted, dropped}; HttpError 400 when any event is refused."""
        assert self._context is not None
        items = data.get("events") if isinstance(data, dict) and "events" in data else [data]
        if not isinstance(items, list) or not 1 <= len(items) <= limits.MAX_EVENTS_PER_POST:
            raise HttpError(400, "bad_request", f"events must be a list of 1 to {limits.MAX_EVENTS_PER_POST}")
        now = self._context.wall_clock()
        try:
            events = [parse(item, user, now, self.new_id) for item in items]
        except EventError as e:
            raise HttpError(400, "bad_request", str(e)) from None
        accepted = self.offer_many(events)
        return {"accepted": accepted, "dropped": len(events) - accepted}

    async def post_events(self, request: web.Request) -> web.StreamResponse:
        """`{"events": [EVENT, ...]}` or one EVENT, for the caller → 202 {accepted, dropped}."""
        user, _ = self._caller(request)
        data = await read_json(request, self.settings.max_body)
        return web.json_response(self._accept(data, user), status=202)

    async def events_socket(self, request: web.Request) -> web.StreamResponse:
        """`/live/STREAM/events`: a page's events over one WebSocket. The token (header or
        `access_token`) is checked once at the upgrade; each text message is what a POST
        body is and is answered {accepted, dropped} or {error, detail}. No HTTP request,
        token check or response per batch: about half the event route's cost per batch."""
        assert self._context is not None
        user, _ = self._caller(request)
        ws = web.WebSocketResponse(
            max_msg_size=self.settings.max_body, heartbeat=limits.SOCKET_HEARTBEAT, compress=False
        )
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"text messages of JSON only")
                break
            answer: dict[str, object]
            try:
                answer = dict(self._accept(json.loads(msg.data), user))
            except ValueError:
                answer = {"error": "bad_request", "detail": "a message must be JSON"}
            except HttpError as e:
                answer = {"error": e.code, "detail": e.detail}
            await ws.send_str(json.dumps(answer))
        return ws

    async def recommendations(self, request: web.Request) -> web.StreamResponse:
        """The caller's recommendations: live streams (kind=stream) or products."""
        assert self._context is not None
        user, _ = self._caller(request)
        kind = request.query.get("kind", "stream")
        if kind not in KINDS:
            raise HttpError(400, "bad_request", "kind must be stream or product")
        n = self._n(request)
        allowed = None
        if kind == "stream":
            allowed = {s for s in self._context.stream_names() if (h := self._context.stream(s)) and h.publishing}
        if kind == "stream" or self.predictor is None:
            items = await self.recommender.recommend(user, kind, n, allowed)
            out: list[dict[str, Any]] = [{"id": i, "score": s} for i, s in items]
        else:
            # The filter's candidates, with the conversion models' predictions (a dot product
            # over at most TOP_N rows); ordered by P(purchase) unless rank_products = "cf".
            items = await self.recommender.recommend(user, kind, limits.TOP_N)
            p_click, p_purchase = self.predictor.predict(user, [i for i, _ in items], self._context.wall_clock())
            order = list(range(len(items)))
            if self.settings.rank_products == "purchase":
                order.sort(key=lambda j: -p_purchase[j])
            out = [
                {
                    "id": items[j][0],
                    "score": items[j][1],
                    "p_click": round(float(p_click[j]), 6),
                    "p_purchase": round(float(p_purchase[j]), 6),
                }
                for j in order[:n]
            ]
        return web.json_response({"kind": kind, "items": out, "version": self.recommender.version})

    async def predict(self, request: web.Request) -> web.StreamResponse:
        """`?product=A&product=B...`: the caller's P(click) and P(purchase) of each product now."""
        assert self._context is not None
        user, _ = self._caller(request)
        products = request.query.getall("product", [])
        if not 1 <= len(products) <= limits.TOP_N:
            raise HttpError(400, "bad_request", f"give 1 to {limits.TOP_N} product parameters")
        if self.predictor is None:
            raise HttpError(503, "not_ready", "the models have not been trained yet")
        p_click, p_purchase = self.predictor.predict(user, products, self._context.wall_clock())
        models = self.predictor.models
        return web.json_response(
            {
                "items": [
                    {"id": p, "p_click": round(float(c), 6), "p_purchase": round(float(b), 6)}
                    for p, c, b in zip(products, p_click, p_purchase)
                ],
                "trained_at": self.predictor.trained_at,
                "impressions": models.rows,
                "clicks": models.clicks,
                "purchases": models.purchases,
            }
        )

    async def bought_together(self, request: web.Request) -> web.StreamResponse:
        """Apriori rules product → other product, best confidence first (no token needed)."""
        product = request.match_info["product"]
        rules = self.basket_rules.get(product, [])[: self._n(request)]
        items = [{"id": r.product, "baskets": r.baskets, "confidence": r.confidence, "lift": r.lift} for r in rules]
        return web.json_response({"product": product, "items": items})

    def _staff(self, request: web.Request) -> None:
        _, role = self._caller(request)
        if role < Role.HOST:
            raise HttpError(403, "forbidden", "a host or admin token is required")

    async def segments_summary(self, request: web.Request) -> web.StreamResponse:
        """The K-means segments (host/admin): k, silhouette per k tried, sizes."""
        self._staff(request)
        if self.segmentation is None:
            raise HttpError(503, "not_ready", "the segments have not been fitted yet")
        return web.json_response(segments.describe(self.segmentation))

    async def plan_promotion(self, request: web.Request) -> web.StreamResponse:
        """`{"price", "options": [{"discount", "cost"}], "audience"?}` (host/admin) → per segment
        the options' expected uptake, redemptions, revenue, cost, objective and the pick."""
        self._staff(request)
        try:
            options, price, audience = planner.parse_request(await request.json())
        except ValueError as e:
            raise HttpError(400, "bad_request", str(e)) from None
        if audience is None:
            audience = self._default_audience()
        result = planner.plan(options, price, audience, self.uptake, self.settings.uptake_per_percent)
        return web.json_response(result)

    def _default_audience(self) -> dict[str, float]:
        """Without an audience in the request: each segment with coupon history, sized by the
        coupons it was shown; else the K-means segments by users; else one segment "all"."""
        if self.coupon_history:
            return {s: float(sum(n for n, _ in by.values())) for s, by in self.coupon_history.items()}
        if self.segmentation is not None and self.segmentation.sizes and self.segmentation.labels:
            return {f"k{k}": float(size) for k, size in enumerate(self.segmentation.sizes)}
        return {"all": 1.0}

    async def also_bought(self, request: web.Request) -> web.StreamResponse:
        product = request.match_info["product"]
        items = await self.recommender.also_bought(product, self._n(request))
        return web.json_response({"product": product, "items": [{"id": i, "score": s} for i, s in items]})

    @staticmethod
    def _n(request: web.Request) -> int:
        try:
            n = int(request.query.get("n", "10"))
        except ValueError:
            raise HttpError(400, "bad_request", "n must be an integer") from None
        if not 1 <= n <= limits.TOP_N:
            raise HttpError(400, "bad_request", f"n must be between 1 and {limits.TOP_N}")
        return n

    async def delete_my_data(self, request: web.Request) -> web.StreamResponse:
        """Every event and model row of the caller, gone from the queue, the store and the models."""
        assert self.store is not None and self.writer is not None
        user, _ = self._caller(request)
        self.writer.forget(user)
        if self._deleted_while_loading is not None:
            self._deleted_while_loading.add(user)
        with contextlib.suppress(RecommenderGone):  # a new one is fed the store after the deletion
            self.recommender.forget(user)
        if self.predictor is not None:
            self.predictor.state.forget(user)
        if self.segmentation is not None:
            self.segmentation.labels.pop(user, None)
        self._deleted.add(user)
        deleted = await self.store.delete_user(user)
        with contextlib.suppress(RecommenderGone):
            await self.refresh()
        return web.json_response({"events_deleted": deleted})
