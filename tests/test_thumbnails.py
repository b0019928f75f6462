"""Stream thumbnails (/live/STREAM/thumbnail.jpg) and the live directory (the index page).

- ThumbnailPolicy, the sans-I/O rule of when a picture is decoded again, on an injected clock.
- render_thumbnail() on a real 720p keyframe: a JPEG of the configured width.
- A real ffmpeg RTMP push: 404 (no-store) before the first keyframe, then a valid 320x180
  JPEG whose picture changes over time (the test clip moves), decoded only while someone asks
  (decodes counted), max-age within the interval; thumbnail requests are no viewers; a bad
  stream name and an unknown stream are 404; a protected stream is 403 without its token.
- The pinned product in /api/streams: the newest product card at the live edge.
- The directory in headless Chromium at a phone-sized viewport: two live streams, thumbnails
  loaded, ordered by viewers for a guest; a viewer with a token gets the order of a test
  recommendations plugin on the plugin API; links open the watch pages; no console error.
- The same with the real audience plugin fed real events over HTTP: two viewers with
  different histories see the live streams in different orders, each their own taste first.

Streams other than the ffmpeg one are fed through the hub's Publisher with the keyframes of
the generated test clip (real H.264 from ffmpeg's encoder), which keeps this file fast.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import sys
import time
from pathlib import Path

import aiohttp
import av
import pytest
from aiohttp import web
from commerce_http import SECRET, auth, call, token
from conftest import ffmpeg_push_cmd, require_tool, run_harness, start_process, stop_process, until

from mediacore.access.tokens import sign
from mediacore.app.config import Config
from mediacore.app.engine import Engine
from mediacore.hub.hub import StreamPublisher
from mediacore.model.media import Frame, Kind, Track
from mediacore.model.metadata import PRODUCT_CLASS
from mediacore.origin.thumbnails import Action, ThumbnailError, ThumbnailPolicy, render_thumbnail
from mediacore.playlist.daterange import DateRange
from mediacore.plugins.api import IdentityError, PluginContext, Role
from mediacore.store.hls import HlsStore
from plugins.audience.plugin import AudiencePlugin

PLAYBACK_SECRET = "s" * 32


# --- helpers ---------------------------------------------------------------------------


def clip_frames(clip: Path, seconds: float = 10.0) -> list[Frame]:
    """The clip's video frames as the hub carries them (avcC config, AVCC NAL units, 90 kHz)."""
    frames = []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        track = Track(Kind.VIDEO, "h264", 90000, bytes(ctx.extradata or b""), "avc1.64001f", ctx.width, ctx.height)
        tb = stream.time_base
        assert tb is not None
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None or packet.dts is None:
                continue
            pts, dts = round(packet.pts * tb * 90000), round(packet.dts * tb * 90000)
            if pts > seconds * 90000:
                break
            frames.append(Frame(track, dts, pts, packet.is_keyframe, bytes(packet), time.time()))
    return frames


def keyframes(clip: Path) -> list[Frame]:
    return [f for f in clip_frames(clip) if f.keyframe]


def jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height of a JPEG, decoded by FFmpeg (fails on anything that is not one)."""
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9", "not a complete JPEG"
    with av.open(io.BytesIO(data), format="mjpeg") as container:
        picture = next(container.decode(video=0))
        return picture.width, picture.height


def luma(data: bytes) -> bytes:
    with av.open(io.BytesIO(data), format="mjpeg") as container:
        picture = next(container.decode(video=0))
        return bytes(picture.to_ndarray(format="gray").tobytes())


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def make_config(config: Config, interval: float = 1.0) -> Config:
    config.http.thumbnail_interval = interval
    config.plugins.enabled = []
    return config


# --- the policy and the renderer ----------------------------------------------------------


def test_policy_decodes_only_new_keyframes_at_most_once_per_interval():
    policy = ThumbnailPolicy(interval=5.0)
    assert policy.request(0.0, keyframes=0) is Action.NOT_YET
    assert policy.request(0.1, keyframes=1) is Action.RENDER
    assert policy.request(0.15, keyframes=2) is Action.WAIT  # a decode is under way: wait for it
    policy.rendered(0.2)
    assert policy.renders == 1 and policy.key == 1
    assert policy.max_age(0.2) == 5
    assert policy.request(3.0, keyframes=3) is Action.SERVE  # fresh for 5 s, whatever arrives
    assert policy.max_age(3.0) == 3
    assert policy.request(5.3, keyframes=3) is Action.RENDER  # due, and a newer keyframe is there
    policy.rendered(5.4)
    assert policy.request(11.0, keyframes=3) is Action.SERVE  # due, but nothing new: no decode
    assert policy.max_age(11.0) == 5  # found current now: good for another interval
    assert policy.request(20.0, keyframes=4) is Action.RENDER
    policy.failed()
    assert policy.request(20.1, keyframes=4) is Action.SERVE  # a keyframe that failed is not retried
    assert policy.request(20.2, keyframes=5) is Action.RENDER
    assert policy.renders == 2


def test_policy_first_keyframe_that_fails_leaves_nothing_to_serve():
    policy = ThumbnailPolicy(interval=5.0)
    assert policy.request(0.0, keyframes=1) is Action.RENDER
    policy.failed()
    assert policy.request(0.1, keyframes=1) is Action.NOT_YET
    assert policy.request(0.2, keyframes=2) is Action.RENDER


def test_render_a_720p_keyframe(clip):
    frame = keyframes(clip)[0]
    assert (frame.track.width, frame.track.height) == (1280, 720)
    assert jpeg_size(render_thumbnail(frame, 320)) == (320, 180)
    assert jpeg_size(render_thumbnail(frame, 4000)) == (1280, 720)  # never above the picture
    with pytest.raises(ThumbnailError):
        render_thumbnail(Frame(frame.track, 0, 0, True, b"\x00\x00\x00\x02\x65\x88"), 320)


def test_pinned_product_is_the_newest_card_still_showing():
    store = HlsStore(segment_duration=2.0)
    t0 = 1_700_000_000.0

    def card(ident: str, start: float, duration: float | None, title: str) -> DateRange:
        attrs = (("X-PRODUCT-ID", ident), ("X-TITLE", title), ("X-PRICE", 1999), ("X-CURRENCY", "EUR"))
        return DateRange(ident, start, PRODUCT_CLASS, duration, attrs)

    other = DateRange("chapter", t0, "com.example.chapter", None, ())
    store.add_segment(2.0, b"", t0, False, 0.0, [card("a", t0, None, "Mug"), other])
    assert store.latest_daterange(PRODUCT_CLASS) == card("a", t0, None, "Mug")
    store.add_segment(2.0, b"", t0 + 2, False, 0.0, [card("b", t0 + 2.5, 10.0, "Lamp")])
    assert store.latest_daterange(PRODUCT_CLASS).id == "b"  # type: ignore[union-attr]
    for i in range(2, 8):  # card b's 10 s run past the live edge: nothing is pinned now
        store.add_segment(2.0, b"", t0 + 2 * i, False, 0.0)
    assert store.latest_daterange(PRODUCT_CLASS) is None


# --- a real push ----------------------------------------------------------------------


async def test_thumbnail_of_a_real_push_refreshed_only_while_asked(config, clip):
    require_tool("ffmpeg")
    interval = 1.0
    make_config(config, interval)
    config.auth.playback_secret = PLAYBACK_SECRET
    config.auth.playback_streams = ["ticketed"]
    engine = Engine(config)
    await engine.start()
    base = f"http://127.0.0.1:{engine.http_port}"
    proc = None
    try:
        async with aiohttp.ClientSession() as session:
            status, headers, _ = await get(session, base + "/live/nobody/thumbnail.jpg")
            assert status == 404
            status, _, _ = await get(session, base + "/live/bad..name/thumbnail.jpg")
            assert status == 404
            # Published, no media yet: 404 that no cache keeps.
            early = engine.hub.publish("early")
            status, headers, _ = await get(session, base + "/live/early/thumbnail.jpg")
            assert status == 404 and headers["Cache-Control"] == "no-store"
            early.close()
            # A protected stream: the playback-token rule applies below /live/STREAM/.
            ticketed = engine.hub.publish("ticketed")
            ticketed.send(keyframes(clip)[0])
            status, headers, _ = await get(session, base + "/live/ticketed/thumbnail.jpg")
            assert status == 403 and headers["Cache-Control"] == "no-store"
            token = sign(PLAYBACK_SECRET.encode(), "ticketed", int(time.time()) + 60)
            status, headers, body = await get(session, f"{base}/live/ticketed/thumbnail.jpg?token={token}")
            assert status == 200 and jpeg_size(body) == (320, 180)
            ticketed.close()

            proc = await start_process(
                *ffmpeg_push_cmd(clip, f"rtmp://127.0.0.1:{engine.rtmp_port}/live/cam", loop=True)
            )
            url = base + "/live/cam/thumbnail.jpg"
            await until(lambda: engine.hub.is_publishing("cam"), 15, "the ffmpeg push")
            stream = engine.hub.get("cam")
            assert stream is not None
            await until(lambda: stream.keyframes > 0, 15, "the first keyframe")
            # Asked every 0.2 s for several keyframe intervals (GOP 2 s): a new picture at most
            # once per interval, and only when a new keyframe came.
            pictures: dict[bytes, bytes] = {}
            started_keys, asked = stream.keyframes, 0
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            while loop.time() - t0 < 5.0:
                status, headers, body = await get(session, url)
                asked += 1
                assert status == 200 and headers["Content-Type"] == "image/jpeg"
                max_age = int(headers["Cache-Control"].rsplit("=", 1)[1])
                assert 1 <= max_age <= math.ceil(interval)
                pictures.setdefault(body, luma(body))
                await asyncio.sleep(0.2)
            decodes = engine.thumbnails.renders_of("cam")
            new_keys = stream.keyframes - started_keys
            assert jpeg_size(next(iter(pictures))) == (320, 180)
            assert 2 <= decodes <= new_keys + 1 <= asked, (decodes, new_keys, asked)
            assert len(pictures) == decodes  # each decode a picture of its own keyframe
            lumas = list(pictures.values())
            diff = max(
                sum(abs(a - b) for a, b in zip(lumas[0], other, strict=True)) / len(other) for other in lumas[1:]
            )
            assert diff > 1.0, "the thumbnail did not change while the picture moved"
            # Nobody asks: keyframes keep arriving, nothing is decoded.
            keys = stream.keyframes
            await asyncio.sleep(4.5)
            assert stream.keyframes >= keys + 2
            assert engine.thumbnails.renders_of("cam") == decodes
            status, _, body = await get(session, url)
            assert status == 200 and engine.thumbnails.renders_of("cam") == decodes + 1
            # Thumbnails are no viewers (the directory shows every stream's to everyone).
            async with session.get(base + "/api/streams") as resp:
                info = {s["name"]: s for s in await resp.json()}
            assert info["cam"]["viewers"] == 0
            assert info["cam"]["thumbnail"] == url and info["cam"]["urls"]["thumbnail"] == url
            assert info["ticketed"]["protected"] and not info["cam"]["protected"]
            assert info["early"]["thumbnail"] is None
    finally:
        if proc is not None:
            await stop_process(proc)
        await engine.stop()


# --- the directory ----------------------------------------------------------------------


class Recommender:
    """`GET /api/recommendations?kind=stream` as the audience plugin answers it: for a
    caller with a token, its streams in the order it prefers; 401 without one."""

    name = "recommender"

    def __init__(self, order: list[str]) -> None:
        self.order = order
        self.asked: list[str] = []

    async def start(self, context: PluginContext) -> None:
        self.context = context
        context.add_route("GET", "/api/recommendations", self.recommendations)

    async def recommendations(self, request: web.Request) -> web.StreamResponse:
        try:
            who = self.context.identity(request)
        except IdentityError:
            who = None
        if who is None:
            return web.json_response({"error": "unauthorized"}, status=401)
        self.asked.append(request.query.get("kind", ""))
        return web.json_response({"kind": "stream", "items": [{"id": s, "score": 1.0} for s in self.order]})

    async def stop(self) -> None: ...


def publish_with_keyframe(engine: Engine, name: str, frame: Frame) -> StreamPublisher:
    publisher = engine.hub.publish(name)
    publisher.update_track(frame.track)
    publisher.send(frame)
    return publisher


async def run_directory(url: str, viewers: list[dict[str, str | None]], expect: int) -> dict:
    cfg = {"url": url, "viewers": viewers, "expect": expect, "width": 390, "height": 844, "timeout": 30}
    return dict(await run_harness("directory.mjs", json.dumps(cfg), timeout=120))


async def test_directory_in_chromium_ranked_by_viewers_and_by_recommendations(config, clip):
    require_tool("node")
    make_config(config, 5.0)
    recommender = Recommender(["quiet", "busy"])  # the viewer with a history prefers the quiet one
    engine = Engine(config)
    engine.plugins = [recommender]
    await engine.start()
    try:
        first = keyframes(clip)[0]
        busy = publish_with_keyframe(engine, "busy", first)
        quiet = publish_with_keyframe(engine, "quiet", first)
        now = engine.clock()
        for i in range(3):
            engine.viewers.record("busy", f"viewer-{i}", now)
        engine.viewers.record("quiet", "viewer-0", now)
        token = recommender.context.issue_token("alice", Role.VIEWER, 600)
        base = f"http://127.0.0.1:{engine.http_port}/"
        report = await run_directory(base, [{"token": None}, {"token": token}], expect=2)
        assert report["exception"] is None, report
        guest, alice = report["viewers"]
        for viewer in (guest, alice):
            assert viewer["ready"], viewer
            assert viewer["console"] == [] and viewer["pageErrors"] == [] and viewer["errors"] == [], viewer
            assert viewer["scrollWidth"] <= viewer["innerWidth"], "the page scrolls sideways on a phone"
            for tile in viewer["tiles"]:
                assert tile["naturalWidth"] == 320 and tile["naturalHeight"] == 180, tile
                assert tile["src"].startswith(f"/live/{tile['stream']}/thumbnail.jpg")
                assert tile["href"] == f"/watch/{tile['stream']}"
            assert all(link["status"] == 200 and link["watchPage"] for link in viewer["links"]), viewer["links"]
        assert guest["order"] == ["busy", "quiet"] and guest["ranking"] == "popularity"
        assert alice["order"] == ["quiet", "busy"] and alice["ranking"] == "personal"
        assert "3 watching" in guest["tiles"][0]["text"]
        assert recommender.asked == ["stream"]  # only the viewer with a token asked
        busy.close()
        quiet.close()
    finally:
        await engine.stop()


async def test_directory_in_chromium_ranked_by_the_audience_plugin_from_real_events(config, clip):
    """The real audience plugin, fed over POST /api/audience/events: two crowds with different
    tastes, then alice watches a cooking stream and bob a gaming one. In Chromium each of them
    sees every live stream with its thumbnail, ranked by the plugin: their own taste first, so
    the two orders differ; a guest gets the popularity order."""
    require_tool("node")
    make_config(config, 5.0)
    config.auth.jwt_secret = SECRET
    config.plugin_settings["audience"] = {"update_interval": 0.2}
    engine = Engine(config)
    engine.plugins = [AudiencePlugin()]
    await engine.start()
    live = ["cooking", "baking", "gaming", "esports"]
    try:
        first = keyframes(clip)[0]
        publishers = [publish_with_keyframe(engine, name, first) for name in live]
        base = f"http://127.0.0.1:{engine.http_port}/"
        async with aiohttp.ClientSession(base) as http:

            async def post(user: str, events: list[dict[str, object]]) -> None:
                status, body = await call(http, "POST", "/api/audience/events", auth(user), json={"events": events})
                assert status == 202 and body["dropped"] == 0, body

            for u in range(6):  # two crowds, each watching and liking a pair of streams
                for crowd, pair in (("chef", ("cooking", "baking")), ("gamer", ("gaming", "esports"))):
                    await post(f"{crowd}{u}", [{"kind": k, "stream": s} for s in pair for k in ("watch_start", "like")])
            await post("alice", [{"kind": "watch_start", "stream": "cooking"}, {"kind": "like", "stream": "cooking"}])
            await post("bob", [{"kind": "watch_start", "stream": "gaming"}, {"kind": "like", "stream": "gaming"}])

            async def ranked(user: str) -> list[str]:
                status, body = await call(http, "GET", "/api/recommendations?kind=stream&n=10", auth(user))
                assert status == 200, body
                return [item["id"] for item in body["items"]]

            expected: dict[str, list[str]] = {}

            async def refreshed() -> bool:
                expected["alice"], expected["bob"] = await ranked("alice"), await ranked("bob")
                return set(expected["alice"][:2]) == {"cooking", "baking"} and set(expected["bob"][:2]) == {
                    "gaming",
                    "esports",
                }

            deadline = time.monotonic() + 30.0  # the plugin's refresh timer, on a loaded machine
            while not await refreshed():
                assert time.monotonic() < deadline, expected
                await asyncio.sleep(0.1)
        viewers: list[dict[str, str | None]] = [{"token": None}, {"token": token("alice")}, {"token": token("bob")}]
        report = await run_directory(base, viewers, expect=len(live))
        assert report["exception"] is None, report
        guest, alice, bob = report["viewers"]
        for viewer in (guest, alice, bob):
            assert viewer["ready"], viewer
            assert viewer["console"] == [] and viewer["pageErrors"] == [] and viewer["errors"] == [], viewer
            assert sorted(viewer["order"]) == sorted(live), viewer["order"]
            for tile in viewer["tiles"]:
                assert tile["naturalWidth"] == 320 and tile["naturalHeight"] == 180, tile
                assert tile["src"].startswith(f"/live/{tile['stream']}/thumbnail.jpg")
        assert guest["ranking"] == "popularity"
        assert alice["ranking"] == bob["ranking"] == "personal"
        assert alice["order"] == expected["alice"] and bob["order"] == expected["bob"]
        assert set(alice["order"][:2]) == {"cooking", "baking"} and set(bob["order"][:2]) == {"gaming", "esports"}
        assert alice["order"] != bob["order"]
        for publisher in publishers:
            publisher.close()
    finally:
        await engine.stop()


async def test_directory_shows_the_pinned_product(config, clip):
    make_config(config, 5.0)
    engine = Engine(config)
    await engine.start()
    try:
        frames = clip_frames(clip, seconds=4.5)  # two whole GOPs: one segment closes
        publisher = engine.hub.publish("shop")
        publisher.update_track(frames[0].track)
        publisher.send(frames[0])
        stream = engine.hub.get("shop")
        assert stream is not None
        stream.add_metadata({"X-PRODUCT-ID": "sku-1", "X-TITLE": "Linen shirt", "X-PRICE": 4900, "X-CURRENCY": "EUR"})
        for frame in frames[1:]:
            publisher.send(frame)
        await until(lambda: engine.stores["shop"].ready, 10, "the first segment")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{engine.http_port}/api/streams") as resp:
                (info,) = await resp.json()
        assert info["product"] == {
            "card": "card-1",
            "id": "sku-1",
            "title": "Linen shirt",
            "price": 4900,
            "currency": "EUR",
        }
        publisher.close()
    finally:
        await engine.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
