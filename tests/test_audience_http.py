"""The audience plugin in a running engine: events over `POST /api/audience/events` and
from the viewer hooks, recommendations for the caller's JWT (products, live streams), a burst
of events changing a viewer's top 10 within 5 s end to end, "also bought",
`DELETE /api/users/me/data` leaving nothing of the caller in SQLite or the models, the
[audience] settings and their example."""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from commerce_http import SECRET, auth, call
from conftest import ROOT

from mediacore.access.identity import Role
from mediacore.app.config import Config, load_config
from mediacore.app.engine import Engine
from mediacore.plugins.api import PluginError
from plugins.audience.events import Event, Kind, pseudonym
from plugins.audience.plugin import AudiencePlugin
from plugins.audience.settings import AudienceSettings


@pytest.fixture
async def audience(config: Config) -> AsyncIterator[tuple[Engine, AudiencePlugin, aiohttp.ClientSession]]:
    config.auth.jwt_secret = SECRET
    config.plugin_settings["audience"] = {"update_interval": 0.2}
    engine = Engine(config)
    plugin = AudiencePlugin()
    engine.plugins = [plugin]
    await engine.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}") as http:
            yield engine, plugin, http
    finally:
        await engine.stop()


async def post(http: aiohttp.ClientSession, user: str, events: list[dict[str, object]]) -> None:
    status, body = await call(http, "POST", "/api/audience/events", auth(user), json={"events": events})
    assert status == 202 and body["dropped"] == 0, body


async def top(http: aiohttp.ClientSession, user: str, kind: str = "product") -> list[str]:
    return [item for item, _ in await scored(http, user, kind)]


async def scored(http: aiohttp.ClientSession, user: str, kind: str = "product") -> list[tuple[str, float]]:
    status, body = await call(http, "GET", f"/api/recommendations?kind={kind}&n=10", auth(user))
    assert status == 200, body
    return [(item["id"], item["score"]) for item in body["items"]]


def ranked_above_ties(items: list[tuple[str, float]], n: int) -> list[frozenset[str]]:
    """The first `n` items as groups of equal score, best first: the order among equal
    scores is arbitrary, and so is which of the items tied at the n-th place make the cut
    (that last group is left out)."""
    groups: list[set[str]] = []
    last: float | None = None
    for item, score in items:
        if last is None or abs(score - last) > 1e-9:
            groups.append(set())
        groups[-1].add(item)
        last = score
    kept, count = [], 0
    for group in groups:
        count += len(group)
        if count > n:
            break
        kept.append(frozenset(group))
    return kept


async def seed(http: aiohttp.ClientSession) -> None:
    """Two taste groups: a* buy a0..a9, b* buy b0..b9."""
    for group in "ab":
        for u in range(8):
            items = [f"{group}{(u + k) % 10}" for k in range(5)]
            await post(http, f"{group}-user{u}", [{"kind": "order", "product": p, "stream": "shop"} for p in items])


async def test_events_recommendations_latency_and_deletion(audience):
    engine, plugin, http = audience
    assert (await call(http, "GET", "/api/recommendations?kind=product"))[0] == 401
    status, body = await call(http, "POST", "/api/audience/events", auth("x"), json={"kind": "nope"})
    assert status == 400 and "kind" in body["detail"]
    assert (await call(http, "GET", "/api/recommendations?kind=other", auth("x")))[0] == 400
    await seed(http)
    # A cold viewer gets popular products, a known one their group's.
    await asyncio.sleep(0.6)
    assert len(await top(http, "stranger")) == 10
    mine = await top(http, "a-user0")
    assert mine and all(p.startswith("a") for p in mine[:5]), mine
    status, also = await call(http, "GET", "/api/audience/also-bought/a1?n=3")
    assert status == 200 and all(i["id"].startswith("a") for i in also["items"])
    # A burst of a new taste: the viewer's top 10 changes within 5 s, end to end.
    before = await top(http, "a-user0")
    start = time.monotonic()
    await post(http, "a-user0", [{"kind": "order", "product": f"n{k}", "stream": "shop"} for k in range(2)])
    for u in range(6):
        await post(http, f"n-user{u}", [{"kind": "order", "product": f"n{k}", "stream": "shop"} for k in range(8)])
    while (after := await top(http, "a-user0")) == before:
        assert time.monotonic() - start < 5.0, "the top 10 did not change within 5 s"
        await asyncio.sleep(0.05)
    assert any(p.startswith("n") for p in after)
    # Deletion: nothing of the caller remains in SQLite or the models.
    me = pseudonym(plugin.key, "a-user0")
    assert plugin.store is not None and await plugin.store.count(me) > 0
    assert await plugin.recommender.holds(me)  # in the recommender's process
    status, body = await call(http, "DELETE", "/api/users/me/data", auth("a-user0"))
    assert status == 200 and body["events_deleted"] > 0
    assert await plugin.store.count(me) == 0
    assert not await plugin.recommender.holds(me)


async def test_events_over_a_websocket_are_the_posts_rule(audience):
    """`/live/STREAM/events`: the token is checked at the upgrade; each message is a POST body
    and is answered like one; a refused message leaves the socket open."""
    engine, plugin, http = audience
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect("/live/shop/events")
    assert refused.value.status == 401
    async with http.ws_connect("/live/shop/events", headers=auth("ws-user")) as ws:
        await ws.send_json({"events": [{"id": f"w{i}", "kind": "like", "stream": "shop"} for i in range(5)]})
        assert await ws.receive_json() == {"accepted": 5, "dropped": 0}
        await ws.send_json({"kind": "nope"})
        answer = await ws.receive_json()
        assert answer["error"] == "bad_request" and "kind" in answer["detail"]
        await ws.send_str("not json")
        assert (await ws.receive_json())["error"] == "bad_request"
        await ws.send_json({"id": "w9", "kind": "gift", "stream": "shop", "value": 300})
        assert await ws.receive_json() == {"accepted": 1, "dropped": 0}
    assert plugin.writer is not None and plugin.store is not None
    await plugin.writer.flush()
    assert await plugin.store.count(pseudonym(plugin.key, "ws-user")) == 6


async def test_viewer_hooks_make_watch_events_and_streams_are_live_only(audience):
    engine, plugin, http = audience
    publisher = engine.hub.publish("live1")  # a live stream without media yet
    try:
        plugin._joined("live1", "viewer-key-1")
        plugin._left("live1", "viewer-key-1")
        await post(http, "fan", [{"kind": "like", "stream": "live1"}, {"kind": "gift", "stream": "gone", "value": 5}])
        await asyncio.sleep(0.6)
        assert plugin.store is not None
        kinds = [e.kind.value for e in await plugin.store.load(0.0)]
        assert sorted(kinds) == ["gift", "like", "watch_start", "watch_stop"]
        assert await top(http, "fan", "stream") == ["live1"], "only streams that are live"
    finally:
        publisher.close()


def test_settings_are_checked():
    assert AudienceSettings.parse({}) == AudienceSettings()
    for bad, message in (
        ({"redis_url": "http://x"}, "redis_url"),
        ({"redis_url": "redis://x"}, "user_key is required"),
        ({"user_key": "short"}, "user_key"),
        ({"method": "magic"}, "method"),
        ({"queue_size": 0}, "queue_size"),
        ({"update_interval": 0}, "update_interval"),
        ({"nope": 1}, "unknown setting audience.nope"),
    ):
        with pytest.raises(PluginError, match=message):
            AudienceSettings.parse(bad)


def test_the_example_audience_section_lists_every_setting_and_is_registered():
    listed = tomllib.loads((ROOT / "mediacore.example.toml").read_text())["audience"]
    assert set(listed) == set(AudienceSettings.__dataclass_fields__)
    assert AudienceSettings.parse(listed) == AudienceSettings(), "the example shows the defaults"
    config = load_config(None, {"plugins": {"enabled": ["audience"]}})
    assert config.plugins.enabled == ["audience"]
    assert "audience" not in load_config(None).plugins.enabled


@pytest.fixture
async def trained(config: Config) -> AsyncIterator[tuple[Engine, AudiencePlugin, aiohttp.ClientSession]]:
    """The plugin holding a synthetic behaviour log (offered as the hooks would) and retrained."""
    from plugins.audience import synthetic

    config.auth.jwt_secret = SECRET
    config.plugin_settings["audience"] = {"update_interval": 0.2, "retention_days": 3650.0, "model_interval": 3600.0}
    engine = Engine(config)
    plugin = AudiencePlugin()
    engine.plugins = [plugin]
    await engine.start()
    try:
        log = synthetic.generate(seed=7, users=300)
        for e in log.events:
            assert plugin.offer(e)
        assert plugin.writer is not None
        await plugin.writer.flush()
        await plugin.retrain()
        await plugin.refresh()  # the recommender's process holds every event
        async with aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}") as http:
            yield engine, plugin, http
    finally:
        await engine.stop()


async def test_predictions_rank_products_and_the_model_routes(trained):
    engine, plugin, http = trained
    assert plugin.predictor is not None and plugin.predictor.models.clicks > 100
    status, body = await call(http, "GET", "/api/audience/predict?product=p1&product=p2", auth("someone"))
    assert status == 200, body
    assert [i["id"] for i in body["items"]] == ["p1", "p2"]
    assert all(0 < i["p_purchase"] < i["p_click"] < 1 for i in body["items"]), body
    assert (await call(http, "GET", "/api/audience/predict", auth("someone")))[0] == 400
    status, body = await call(http, "GET", "/api/recommendations?kind=product&n=10", auth("someone"))
    assert status == 200 and len(body["items"]) == 10
    p = [i["p_purchase"] for i in body["items"]]
    assert p == sorted(p, reverse=True), "ranked by predicted purchase"
    # Segments are fitted and saved; only hosts and admins see the summary.
    assert (await call(http, "GET", "/api/audience/segments", auth("someone")))[0] == 403
    status, summary = await call(http, "GET", "/api/audience/segments", auth("host", Role.HOST))
    assert status == 200 and summary["k"] >= 2 and str(summary["k"]) in summary["silhouette"], summary
    assert plugin.recommender.segments and await plugin.store.count() > 0  # type: ignore[union-attr]
    status, body = await call(http, "GET", "/api/audience/bought-together/nothing-like-it")
    assert status == 200 and body["items"] == []


async def test_promotion_plan_over_http(trained):
    engine, plugin, http = trained
    request = {"price": 10000, "options": [{"discount": d, "cost": d * 50 + 300} for d in (5, 10, 20, 40)]}
    assert (await call(http, "POST", "/api/promotions/plan", auth("viewer"), json=request))[0] == 403
    status, body = await call(http, "POST", "/api/promotions/plan", auth("host", Role.HOST), json={"price": 1})
    assert status == 400 and "options" in body["detail"]
    # No coupon history yet: every K-means segment gets the proportional model.
    status, plan = await call(http, "POST", "/api/promotions/plan", auth("admin", Role.ADMIN), json=request)
    assert status == 200, plan
    assert plan["segments"] and all(s["model"] == "proportional" for s in plan["segments"].values())
    assert [o["uptake"] for o in plan["overall"]["options"]] == [0.05, 0.1, 0.2, 0.4]
    # Coupon history of one campaign segment: it gets its own curve.
    now = time.time()
    for k in range(200):
        d = (5, 10, 20, 40)[k % 4]
        plugin.offer(Event(f"cs{k}", Kind.COUPON_SHOWN, f"c{k}", now, value=d, segment="vip"))
        if k % 4 >= 2 or k % 8 == 1:
            plugin.offer(Event(f"cr{k}", Kind.COUPON_REDEEMED, f"c{k}", now, value=d, segment="vip"))
    assert plugin.writer is not None
    await plugin.writer.flush()
    await plugin.retrain()
    status, plan = await call(http, "POST", "/api/promotions/plan", auth("admin", Role.ADMIN), json=request)
    assert status == 200 and plan["segments"]["vip"]["model"] == "logistic", plan
    uptake = [o["uptake"] for o in plan["segments"]["vip"]["options"]]
    assert uptake == sorted(uptake) and uptake[-1] > 0.8 and uptake[0] < 0.4, uptake
    assert plan["segments"]["vip"]["pick"] in range(4)


async def test_directory_order_differs_between_viewers_through_the_real_plugin(audience):
    """The live directory asks GET /api/recommendations?kind=stream with the viewer's token:
    two viewers with different histories get different orders of the same live streams."""
    engine, plugin, http = audience
    live = ["cooking", "baking", "gaming", "esports"]
    publishers = [engine.hub.publish(name) for name in live]
    try:
        for u in range(6):  # two crowds, each watching a pair of streams
            await post(
                http,
                f"chef{u}",
                [{"kind": k, "stream": s} for s in ("cooking", "baking") for k in ("watch_start", "like")],
            )
            await post(
                http,
                f"gamer{u}",
                [{"kind": k, "stream": s} for s in ("gaming", "esports") for k in ("watch_start", "like")],
            )
        await post(
            http,
            "alice",
            [{"kind": "watch_start", "stream": "cooking"}, {"kind": "gift", "stream": "cooking", "value": 500}],
        )
        await post(http, "bob", [{"kind": "watch_start", "stream": "gaming"}, {"kind": "like", "stream": "gaming"}])
        start = time.monotonic()
        while True:
            alice, bob = await top(http, "alice", "stream"), await top(http, "bob", "stream")
            if set(alice[:2]) == {"cooking", "baking"} and set(bob[:2]) == {"gaming", "esports"}:
                break
            assert time.monotonic() - start < 5.0, (alice, bob)
            await asyncio.sleep(0.1)
        assert alice != bob and sorted(alice) == sorted(bob) == sorted(live)
        status, streams = await call(http, "GET", "/api/streams")
        assert status == 200
    finally:
        for publisher in publishers:
            publisher.close()


async def test_a_recommender_process_that_dies_is_replaced_and_fed_the_store(audience, caplog):
    """The recommender runs in a child process: killed, the plugin notices, starts a new one
    fed the stored events, and serves the same recommendations; a user deleted meanwhile is
    not brought back from the store."""
    engine, plugin, http = audience
    await seed(http)
    await plugin.writer.flush()  # stored and sent to the recommender, so the refresh sees them all
    await plugin.refresh()
    before = await scored(http, "a-user0")
    assert before and all(p.startswith("a") for p, _ in before[:5])
    first = plugin.recommender
    assert first._proc is not None
    first._proc.kill()
    start = time.monotonic()
    while plugin.recommender is first or not plugin.recommender.alive or plugin.recommender.version == 0:
        assert time.monotonic() - start < 10.0, "no new recommender process within 10 s"
        await asyncio.sleep(0.05)
    assert "the recommender process ended" in caplog.text
    after = await scored(http, "a-user0")
    assert ranked_above_ties(after, 5) == ranked_above_ties(before, 5)  # the user's own taste, ties in any order
    me = pseudonym(plugin.key, "b-user1")
    assert await plugin.recommender.holds(me)
    status, _ = await call(http, "DELETE", "/api/users/me/data", auth("b-user1"))
    assert status == 200 and not await plugin.recommender.holds(me)


async def test_the_recommender_process_refuses_an_oversized_frame(audience, caplog):
    """A frame longer than MAX_FRAME is refused before it is read: the child logs it and
    exits, and the plugin starts another."""
    from plugins.audience.refresher import FRAME, MAX_FRAME

    engine, plugin, http = audience
    await seed(http)
    first = plugin.recommender
    assert first._writer is not None and first._proc is not None
    first._writer.write(FRAME.pack(MAX_FRAME + 1))
    assert await asyncio.wait_for(first._proc.wait(), 10.0) is not None
    start = time.monotonic()
    while plugin.recommender is first or plugin.recommender.version == 0:
        assert time.monotonic() - start < 10.0, "no new recommender process within 10 s"
        await asyncio.sleep(0.05)
    assert await top(http, "a-user0")
