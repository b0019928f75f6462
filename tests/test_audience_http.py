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

from mediacore.app.config import Config, load_config
from mediacore.app.engine import Engine
from mediacore.plugins.api import PluginError
from plugins.audience.events import pseudonym
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
    status, body = await call(http, "GET", f"/api/recommendations?kind={kind}&n=10", auth(user))
    assert status == 200, body
    return [item["id"] for item in body["items"]]


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
    status, body = await call(http, "DELETE", "/api/users/me/data", auth("a-user0"))
    assert status == 200 and body["events_deleted"] > 0
    assert await plugin.store.count(me) == 0
    assert all(me not in table.users for table in plugin.recommender.tables.values())
    assert all(me not in model.top for model in plugin.recommender.models.values())


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
