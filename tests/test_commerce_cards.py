"""Product cards over HTTP with a real ffmpeg push: `POST /api/streams/STREAM/cards` pins a
DATERANGE (CLASS com.mediacore.product, X-PRODUCT-ID / X-TITLE / X-PRICE / X-CURRENCY /
X-IMAGE / X-SALE-ID, at most 1 KB) that appears in index.m3u8 and both LL-HLS renditions with
the ID and START-DATE the call answered; bad calls get 4xx. The demo shop seeds its catalogue
and flash sale idempotently and pins cards on its stream by itself."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from commerce_http import ADMIN, HOST, SECRET, auth, call
from conftest import ffmpeg_push_cmd, require_tool, start_process, stop_process, wait_for_playlist

from mediacore.app.config import Config
from mediacore.app.engine import Engine
from mediacore.playlist.daterange import DateRange
from plugins.commerce import demo
from plugins.commerce.plugin import CommercePlugin

PLAYLISTS = ("index.m3u8", "ll/video.m3u8", "ll/audio.m3u8")


def dateranges(text: str) -> dict[str, DateRange]:
    ranges = [DateRange.parse(ln) for ln in text.splitlines() if ln.startswith("#EXT-X-DATERANGE:")]
    return {dr.id: dr for dr in ranges}


async def listed(http: aiohttp.ClientSession, card_id: str, timeout: float = 15) -> list[DateRange]:
    """The card as each of the three playlists lists it, once all of them do."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = []
        for path in PLAYLISTS:
            async with http.get(f"/live/shop/{path}") as r:
                found.append(dateranges(await r.text()).get(card_id))
        if all(found):
            return [f for f in found if f is not None]
        assert asyncio.get_running_loop().time() < deadline, (card_id, found)
        await asyncio.sleep(0.2)


async def test_cards_reach_every_playlist_and_the_demo_shop_pins_its_own(config: Config, clip) -> None:
    require_tool("ffmpeg")
    config.auth.jwt_secret = SECRET
    config.plugin_settings["commerce"] = {"demo": True, "demo_stream": "shop", "demo_card_interval": 1.0}
    engine = Engine(config)
    engine.plugins = [CommercePlugin()]
    await engine.start()
    pusher = None
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}") as http:
            # The demo catalogue and its flash sale are there before any stream.
            status, products = await call(http, "GET", "/api/products")
            assert {p["id"] for p in products["products"]} == {p[0] for p in demo.CATALOGUE}
            long_title = "Very long title " * 12
            body = {"id": "sku-card", "title": long_title, "price": 1999, "image": "https://img.example/" + "i" * 1200}
            assert (await call(http, "POST", "/api/products", ADMIN, json=body))[0] == 201
            card = {"product_id": "sku-card", "duration": 15}
            assert (await call(http, "POST", "/api/streams/shop/cards", HOST, json=card))[0] == 404, "no stream yet"

            pusher = await start_process(
                *ffmpeg_push_cmd(clip, f"rtmp://127.0.0.1:{engine.rtmp_port}/live/shop", loop=True)
            )
            await wait_for_playlist(engine.http_port, "shop", segments=1)
            # Who may pin, and bad input.
            assert (await call(http, "POST", "/api/streams/shop/cards", json=card))[0] == 401
            assert (await call(http, "POST", "/api/streams/shop/cards", auth("v"), json=card))[0] == 403
            for bad, status in (
                ({"product_id": "nope"}, 404),
                ({"product_id": "sku-card", "duration": -1}, 400),
                ({"product_id": "sku-card", "duration": 10**9}, 400),
                ({"product_id": "sku-card", "extra": 1}, 400),
                ({}, 400),
            ):
                assert (await call(http, "POST", "/api/streams/shop/cards", HOST, json=bad))[0] == status, bad
            assert (await call(http, "POST", "/api/streams/nope/cards", HOST, json=card))[0] == 404

            status, pinned = await call(http, "POST", "/api/streams/shop/cards", HOST, json=card)
            assert status == 201, pinned
            cards = await listed(http, pinned["id"])
            assert cards[0] == cards[1] == cards[2]
            shown = cards[0]
            assert shown.cls == "com.mediacore.product" and shown.duration == 15
            assert f'START-DATE="{pinned["start_date"]}"' in shown.render()
            attributes = dict(shown.attributes)
            assert attributes["X-PRODUCT-ID"] == "sku-card" and attributes["X-PRICE"] == 1999
            assert "X-IMAGE" not in attributes and "X-SALE-ID" not in attributes, "the image did not fit in 1 KB"
            assert str(attributes["X-TITLE"]).startswith("Very long title")
            assert len(shown.render()) < 1024 + 200

            # The demo's own cards: the flash-sale lamp first, with its live sale.
            async with http.get("/live/shop/index.m3u8") as r:
                text = await r.text()
            deadline = time.monotonic() + 10
            while 'X-PRODUCT-ID="demo-lamp"' not in text:
                assert time.monotonic() < deadline, "the demo pinned no card"
                await asyncio.sleep(0.3)
                async with http.get("/live/shop/index.m3u8") as r:
                    text = await r.text()
            lamp = next(d for d in dateranges(text).values() if dict(d.attributes).get("X-PRODUCT-ID") == "demo-lamp")
            sale_id = str(dict(lamp.attributes)["X-SALE-ID"])
            status, sale = await call(http, "GET", f"/api/sales/{sale_id}")
            assert status == 200 and sale["state"] == "live" and dict(lamp.attributes)["X-PRICE"] == sale["price"]
            # The watch page buys from the card with a viewer token.
            order = {"sale_id": sale_id, "stream": "shop"}
            headers = auth("guest-1") | {"Idempotency-Key": "tap-1"}
            assert (await call(http, "POST", "/api/orders", headers, json=order))[0] == 201
        await stop_process(pusher)
        pusher = None
        async with aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}") as http:
            await asyncio.sleep(0.5)
            status, answer = await call(http, "POST", "/api/streams/shop/cards", HOST, json=card)
            assert status == 409 and answer["error"] == "not_live"
    finally:
        if pusher is not None:
            await stop_process(pusher)
        await engine.stop()

    # Seeding again (a restart) adds nothing: the same products, the same live sale.
    engine = Engine(config)
    engine.plugins = [CommercePlugin()]
    await engine.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}") as http:
            assert len((await call(http, "GET", "/api/products"))[1]["products"]) == len(demo.CATALOGUE) + 1
            assert (await call(http, "GET", f"/api/sales/{sale_id}"))[1]["remaining"] == demo.SALE_STOCK - 1
    finally:
        await engine.stop()
