"""The watch page in headless Chromium at a phone-sized viewport (390x844), with the demo
publisher (burned-in clock) pushing: a product card pinned through the hub is shown when
*playback* reaches its START-DATE and hidden after its DURATION, to the frame, for an LL-HLS
viewer and a plain-HLS viewer several seconds further behind; the buy button places one order
for one tap even when the tap is repeated rapidly (and retries that order with the same
Idempotency-Key after a 503); the page plays and logs no console error.

Card timing is measured in the page: requestVideoFrameCallback maps each presented frame's
media time to PROGRAM-DATE-TIME; the first frame on which the card is visible has a PDT at
or after START-DATE by less than one frame (33.3 ms at 30 fps) wherever playback presented
consecutive frames around it, and the frame before it was
before START-DATE. The orders endpoint here is a test plugin on the plugin API with the
commerce contract's shape (`POST /api/orders`, Idempotency-Key), so this test does not need
the commerce plugin."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from aiohttp import web
from watch_harness import demo_and_browser

from mediacore.app.engine import Engine
from mediacore.plugins.api import IdentityError, PluginContext
from plugins.accounts.plugin import AccountsPlugin
from plugins.chat.plugin import ChatPlugin

FRAME_MS = 1000 / 30
ONE_FRAME = 34.0
"""Milliseconds within which the card must appear (and go): one frame at 30 fps, rounded up."""
ROUNDING = 1.0
"""PDT and START-DATE are written to the millisecond: the page accepts a frame within 1 ms of it."""
VIEWPORT = (390, 844)
SYNC, BUY, SALE = "sku-a", "sku-b", "sale-7"


class Shop:
    """`POST /api/orders` with the commerce plugin's contract, counting: every request (key,
    buyer, body) and every order made. The first request with a key gets a 503, so the page
    must retry that tap with the same key; a retry of a completed key replays its answer."""

    name = "shop"

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.orders: dict[str, dict[str, Any]] = {}
        self.failed_once: set[str] = set()

    async def start(self, context: PluginContext) -> None:
        self.context = context
        context.add_route("POST", "/api/orders", self.order)

    async def order(self, request: web.Request) -> web.StreamResponse:
        try:
            who = self.context.identity(request)
        except IdentityError:
            return web.json_response({"error": "unauthorized"}, status=401)
        if who is None:
            return web.json_response({"error": "unauthorized"}, status=401)
        key = request.headers.get("Idempotency-Key")
        if not key:
            return web.json_response({"error": "idempotency_key_required"}, status=400)
        body = await request.json()
        self.requests.append((key, who.sub, body))
        await asyncio.sleep(0.3)  # an order takes a moment: taps land while it is in flight
        if key not in self.failed_once:
            self.failed_once.add(key)
            return web.json_response({"error": "unavailable"}, status=503, headers={"Retry-After": "1"})
        if key not in self.orders:
            self.orders[key] = {"order_id": f"o-{len(self.orders) + 1}", "total": 1999, "buyer": who.sub, **body}
        return web.json_response(self.orders[key], status=201)

    async def stop(self) -> None: ...


async def test_cards_in_sync_for_ll_and_hls_viewers_and_one_order_per_tap(config):
    config.hls.end_grace = 3.0
    engine = Engine(config)
    shop = Shop()
    engine.plugins = [AccountsPlugin(), shop, ChatPlugin()]
    await engine.start()
    try:
        base = f"http://127.0.0.1:{engine.http_port}/watch/shop"
        harness = {
            "urls": [base, base + "?ll=0"],  # LL-HLS (the default) and plain HLS
            "sync": SYNC,
            "buy": BUY,
            "taps": 5,
            "width": VIEWPORT[0],
            "height": VIEWPORT[1],
            "timeout": 90,
        }
        async with demo_and_browser(engine, "shop", "watch.mjs", harness) as run:
            stream = engine.hub.get("shop")
            assert stream is not None
            sync = stream.add_metadata({"X-PRODUCT-ID": SYNC, "X-TITLE": "Blue mug", "X-PRICE": "19.99"}, duration=3.0)
            await asyncio.sleep(4.0)
            buy = stream.add_metadata(
                {"X-PRODUCT-ID": BUY, "X-TITLE": "Red kettle", "X-PRICE": "49.00", "X-SALE-ID": SALE}, duration=60.0
            )
            report, err = await run.report(120)
    finally:
        await engine.stop()

    assert report["exception"] is None, (report["exception"], err[-2000:])
    assert report["done"], json.dumps(report)[-3000:]
    figures = {}
    for entry, kind in zip(report["pages"], ("LL-HLS", "HLS"), strict=True):
        end = entry["end"]
        assert end["lowLatency"] == (kind == "LL-HLS")
        # The only console line allowed is Chromium's own network log of the 503 the shop
        # answers on purpose (the buying page's first order attempt).
        expected = ["Failed to load resource: the server responded with a status of 503 (Service Unavailable)"]
        console = entry["console"]
        assert console == (expected if kind == "LL-HLS" else []) and not entry["pageErrors"], (kind, console)
        assert end["fatal"] is None, end["errors"]
        assert end["frames"] - entry["ready"]["frames"] > 150, (kind, entry["ready"]["frames"], end["frames"])
        # Phone viewport: nothing wider than the screen, a buy button big enough to tap.
        assert end["innerWidth"] == VIEWPORT[0] and end["scrollWidth"] <= VIEWPORT[0], end
        assert end["button"]["height"] >= 44 and end["button"]["x"] + end["button"]["width"] <= VIEWPORT[0]
        (shown,) = [e for e in end["cardLog"] if e["productId"] == SYNC]
        (hidden,) = [e for e in end["hideLog"] if e["productId"] == SYNC]
        (bought,) = [e for e in end["cardLog"] if e["productId"] == BUY]
        assert abs(shown["start"] - sync.start_date * 1000) < 1  # the START-DATE the page parsed is the hub's
        assert abs(bought["start"] - buy.start_date * 1000) < 1
        assert hidden["end"] == shown["start"] + 3000
        assert shown["knownAtPdt"] is None or shown["knownAtPdt"] < shown["start"]  # known before it was due
        # Each change (SYNC shown, SYNC hidden, BUY shown) happens on the first presented frame
        # at or after its date: the frame before was earlier.
        changes = {"show": (shown, shown["start"]), "hide": (hidden, hidden["end"]), "buy": (bought, bought["start"])}
        contiguous = []
        for name, (change, due) in changes.items():
            assert change["prevPdt"] < due - ROUNDING <= change["pdt"], (kind, name, change)
            # To the frame: where playback presented consecutive frames around the date, the card
            # changed on the frame carrying it. (A player that skipped ahead under load presents no
            # frame near the date; the first frame after it is then the right one, checked above.)
            if change["pdt"] - change["prevPdt"] <= 2 * FRAME_MS + ROUNDING:
                assert change["pdt"] - due <= ONE_FRAME, (kind, name, change)
                contiguous.append(name)
        # At least one card's appearance is measured to the frame for each viewer.
        assert {"show", "buy"} & set(contiguous), (kind, "playback skipped over both cards' appearance", changes)
        behind = (end["now"] - end["framePdt"]) / 1000
        figures[kind] = {
            "show_ms": round(shown["delta"], 1),
            "hide_ms": round(hidden["pdt"] - hidden["end"], 1),
            "buy_card_ms": round(bought["delta"], 1),
            "to_the_frame": contiguous,
            "behind_s": round(behind, 2),
        }
        assert end["viewers"] is not None and end["viewers"] >= 1
        assert end["latencyText"].startswith("latency ") and end["latencyText"] != "latency –"
    print("card sync", figures, file=sys.stderr)
    # Different delays: the HLS viewer plays several seconds further behind live.
    assert figures["HLS"]["behind_s"] - figures["LL-HLS"]["behind_s"] > 2.0, figures
    assert figures["LL-HLS"]["behind_s"] < 3.0, figures
    # One order for five rapid taps: one key, sent twice (the 503, then the retry), one order.
    ll = report["pages"][0]["end"]
    assert len(ll["orders"]) == 1, ll["orders"]
    (tap,) = ll["orders"]
    assert tap["status"] == 201 and tap["attempts"] == 2 and tap["body"]["sale_id"] == SALE
    assert ll["result"] == "Ordered ✓"
    assert [k for k, _, _ in shop.requests] == [tap["key"], tap["key"]]
    assert len(shop.orders) == 1
    (sub,) = {s for _, s, _ in shop.requests}
    assert sub.startswith("guest-")  # the page's guest token, from the accounts plugin
    assert shop.requests[0][2] == {"sale_id": SALE}


async def test_watch_page_scripts_and_plugin_page_scripts(config, tmp_path):
    """watch.js is served; a plugin's page script is loaded by the page only while the plugin
    runs (no chat plugin here: no chat script, no failed request), and nothing else is
    reachable under /static/."""
    import aiohttp

    class Pane:
        name = "pane"

        async def start(self, context: PluginContext) -> None:
            script = tmp_path / "pane.js"
            script.write_text("window.paneLoaded = true;\n")
            context.add_page_script("pane.js", script)

        async def stop(self) -> None: ...

    engine = Engine(config)
    engine.plugins = [AccountsPlugin(), Pane()]
    await engine.start()
    try:
        base = f"http://127.0.0.1:{engine.http_port}"
        async with aiohttp.ClientSession(base) as http:
            async with http.get("/watch/shop") as r:
                html = await r.text()
            assert '<section id="chat"' in html and "/static/watch.js" in html
            assert '<script src="/static/plugins/pane.js" defer></script>' in html and "chat.js" not in html
            async with http.get("/static/watch.js") as r:
                assert r.status == 200 and "requestVideoFrameCallback" in await r.text()
                assert r.headers["Cache-Control"] == "no-cache"
            async with http.get("/static/plugins/pane.js") as r:
                assert r.status == 200 and "paneLoaded" in await r.text()
            for bad in (
                "/static/chat.js",
                "/static/plugins/chat.js",
                "/static/..%2Fwatch.html",
                "/static/watch.html",
                "/static/.hidden.js",
                "/static/plugins/..%2F..%2Fwatch.html",
            ):
                async with http.get(bad) as r:
                    assert r.status == 404, bad
    finally:
        await engine.stop()
