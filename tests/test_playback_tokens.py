"""Signed playback tokens end to end: a real ffmpeg publisher, the origin, an edge in front of
it and hls.js in headless Chromium, all on a stream that needs a token."""

from __future__ import annotations

import asyncio
import sys
import time
from urllib.parse import urljoin

import aiohttp
import pytest
import pytest_asyncio
from conftest import (
    ROOT,
    ffmpeg_push_cmd,
    local_config,
    make_clip,
    play_in_browser,
    start_process,
    stop_process,
)

from edge.server import EdgeConfig, EdgeNode, run_edge
from mediacore.access.tokens import PlaybackPolicy, sign
from mediacore.app.engine import Engine
from mediacore.playlist.media import MediaPlaylist
from mediacore.playlist.multivariant import MultivariantPlaylist
from mediacore.playlist.uris import ll_part_uri, parse_ll_media

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
SECRET = "a-playback-secret-for-tests"
STREAM = "tv"
PROTECTED = "X-Mediacore-Protected"


def token(ttl: float = 300, viewer: str = "", stream: str = STREAM, secret: str = SECRET) -> str:
    return sign(secret.encode(), stream, int(time.time() + ttl), viewer)


def origin_requests(engine: Engine) -> float:
    """Requests the origin answered for the stream's routes, whatever the status."""
    total = 0.0
    for metric in engine.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "mediacore_http_requests_total" and sample.labels.get("route", "").startswith("/live/"):
                total += sample.value
    return total


class Setup:
    def __init__(self, engine: Engine, node: EdgeNode, edge_port: int) -> None:
        self.engine = engine
        self.node = node
        self.origin = f"http://127.0.0.1:{engine.http_port}"
        self.edge = f"http://127.0.0.1:{edge_port}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def protected():
    config = local_config(auth={"playback_secret": SECRET, "playback_streams": [STREAM]})
    engine = Engine(config)
    await engine.start()
    node = EdgeNode(EdgeConfig(upstreams=[f"http://127.0.0.1:{engine.http_port}"], playback_secret=SECRET))
    edge_runner, edge_port = await run_edge(node.config, "127.0.0.1", 0, node)
    pusher = await start_process(
        *ffmpeg_push_cmd(make_clip(), f"rtmp://127.0.0.1:{engine.rtmp_port}/live/{STREAM}", loop=True)
    )
    try:
        for _ in range(300):
            store = engine.stores.get(STREAM)
            lls = engine.ll_renditions.get(STREAM)
            if store and store.ready and len(store.segments) >= 2 and lls and all(r.ready for r in lls.values()):
                break
            await asyncio.sleep(0.1)
        yield Setup(engine, node, edge_port)
    finally:
        await stop_process(pusher)
        await edge_runner.cleanup()
        await engine.stop()


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes, aiohttp.typedefs.LooseHeaders]:
    async with session.get(url) as r:
        return r.status, await r.read(), r.headers


def all_uris(text: str) -> list[str]:
    if "#EXT-X-STREAM-INF" in text:
        mv = MultivariantPlaylist.parse(text)
        return [v.uri for v in mv.variants] + [a.uri for a in mv.audio]
    pl = MediaPlaylist.parse(text)
    found = [r.uri for r in pl.rendition_reports] + ([pl.preload_hint] if pl.preload_hint else [])
    for seg in pl.segments:
        found += [p.uri for p in seg.parts] + [u for u in (seg.uri, seg.map_uri) if u]
    return found


async def walk(session: aiohttp.ClientSession, base: str, tok: str) -> dict[str, str]:
    """Fetch every playlist of the stream with `tok`, check that each URI in them carries it
    and that a segment, a part, an init segment and a blocking request answer 200."""
    seen: dict[str, str] = {}
    for path in ("index.m3u8", "ll.m3u8", "ll/video.m3u8", "ll/audio.m3u8"):
        url = f"{base}/live/{STREAM}/{path}?token={tok}"
        status, body, headers = await get(session, url)
        assert status == 200, (url, status, body[:200])
        assert headers[PROTECTED] == "1"
        text = body.decode()
        uris = all_uris(text)
        assert uris and all(u.endswith(f"?token={tok}") for u in uris), (path, [u for u in uris if tok not in u])
        seen[path] = text
        if path == "index.m3u8":
            status, _, _ = await get(session, urljoin(url, uris[-1]))
            assert status == 200  # a segment
        if path == "ll/video.m3u8":
            pl = MediaPlaylist.parse(text)
            done = [p for s in pl.segments for p in s.parts if not p.gap]
            for uri in (done[-1].uri, pl.segments[-1].map_uri or ""):
                status, _, _ = await get(session, urljoin(url, uri))
                assert status == 200, uri  # a part, the init segment
            hint = parse_ll_media((pl.preload_hint or "").split("?")[0].removesuffix(".m4s"))
            assert hint is not None and hint.part is not None
            blocking = f"{url}&_HLS_msn={hint.msn}&_HLS_part={hint.part}"
            status, body, _ = await get(session, blocking)  # as hls.js asks: its directives after ours
            assert status == 200 and all(u.endswith(f"?token={tok}") for u in all_uris(body.decode()))
            status, _, _ = await get(session, urljoin(url, pl.preload_hint or ""))
            assert status == 200  # the hinted part, waited for
    return seen


async def test_a_valid_token_plays_every_resource_from_the_origin(protected):
    async with aiohttp.ClientSession() as session:
        await walk(session, protected.origin, token(viewer="alice"))


async def test_the_origin_refuses_missing_bad_foreign_and_expired_tokens(protected):
    store = protected.engine.stores[STREAM]
    segment = f"/live/{STREAM}/{store.segments[-1].uri}"
    good = token()
    expiry, viewer, sig = good.split(".")
    cases = {
        "": 403,
        "?token=": 403,
        "?token=garbage": 403,
        f"?token={expiry}.{viewer}.{'A' * 43}": 403,  # bad signature
        f"?token={int(expiry) + 1}.{viewer}.{sig}": 403,  # expiry changed
        f"?token={token(stream='other')}": 403,  # another stream's token
        f"?token={token(secret='not-the-origins-secret')}": 403,
        f"?token={token(ttl=-5)}": 410,  # expired
    }
    async with aiohttp.ClientSession() as session:
        for path in (f"/live/{STREAM}/index.m3u8", f"/live/{STREAM}/ll/video.m3u8?_HLS_msn=1", segment):
            for query, expected in cases.items():
                sep = "&" if "?" in path and query else ""
                url = protected.origin + path + (sep + query[1:] if sep else query)
                status, _, headers = await get(session, url)
                assert status == expected, (url, status)
                assert headers["Cache-Control"] == "no-store" and headers[PROTECTED] == "1"
        # the watch page stays open; an unknown protected name is refused, not reported missing
        assert (await get(session, f"{protected.origin}/watch/{STREAM}"))[0] == 200
        assert (await get(session, f"{protected.origin}/live/{STREAM}x/index.m3u8"))[0] == 404  # not protected


async def test_a_stream_without_protection_is_served_as_before(protected):
    state = protected.engine.origin
    saved = state.playback
    async with aiohttp.ClientSession() as session:  # protected: refused without a token
        assert (await get(session, f"{protected.origin}/live/{STREAM}/index.m3u8"))[0] == 403
    state.playback = PlaybackPolicy(SECRET.encode(), ("another",))
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("index.m3u8", "ll/video.m3u8"):
                status, body, headers = await get(session, f"{protected.origin}/live/{STREAM}/{path}?token={token()}")
                assert status == 200 and PROTECTED not in headers
                assert b"token=" not in body  # no rewrite
                status, plain, _ = await get(session, f"{protected.origin}/live/{STREAM}/{path}")
                assert status == 200 and b"token=" not in plain
    finally:
        state.playback = saved


async def test_through_an_edge_each_viewer_gets_its_own_token_and_none_gets_nothing(protected):
    alice, bob = token(viewer="alice"), token(viewer="bob")
    async with aiohttp.ClientSession() as session:
        seen = await walk(session, protected.edge, alice)
        # Bob is served from the same cache entries, each URI with his token, never Alice's.
        for path in ("index.m3u8", "ll.m3u8", "ll/video.m3u8"):
            status, body, headers = await get(session, f"{protected.edge}/live/{STREAM}/{path}?token={bob}")
            assert status == 200
            assert alice not in body.decode() and all(u.endswith(f"?token={bob}") for u in all_uris(body.decode()))
        # The cache holds token-free playlists: no viewer's and not the edge's own.
        cached = protected.node.cache.get(f"/live/{STREAM}/index.m3u8")
        assert cached is not None and b"token=" not in cached.body
        # A viewer without a token, or with a bad or expired one, gets nothing from the warm
        # edge, and the origin is not asked.
        segment = all_uris(seen["index.m3u8"])[-1].split("?")[0]
        before = origin_requests(protected.engine)
        for query, expected in (("", 403), ("?token=x.y.z", 403), (f"?token={token(ttl=-1)}", 410)):
            for path in ("index.m3u8", segment):
                status, body, headers = await get(session, f"{protected.edge}/live/{STREAM}/{path}{query}")
                assert status == expected, (path, query, status)
                assert headers["Cache-Control"] == "no-store" and b"#EXTM3U" not in body
        assert origin_requests(protected.engine) == before
        status, body, _ = await get(session, f"{protected.edge}/metrics")
        assert 'mediacore_edge_refused_total{reason="token_missing"} 2.0' in body.decode()


async def test_a_collapsed_waiter_is_authorised_on_its_own(protected):
    """A stampede on the part after the preload hint, viewers with and without tokens mixed:
    one upstream fetch, and only the token holders get the part."""
    tok = token()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for _ in range(100):
            _, body, _ = await get(session, f"{protected.edge}/live/{STREAM}/ll/video.m3u8?token={tok}")
            hint = MediaPlaylist.parse(body.decode()).preload_hint or ""
            name = parse_ll_media(hint.split("?")[0].removesuffix(".m4s"))
            if name is not None and name.part is not None and name.part <= 4:
                break
            await asyncio.sleep(0.05)
        assert name is not None and name.part is not None
        after = ll_part_uri(name.prefix, name.session, name.msn, name.part + 1)
        url = f"{protected.edge}/live/{STREAM}/ll/{after}"
        results = await asyncio.gather(*(get(session, url + (f"?token={tok}" if i % 2 else "")) for i in range(200)))
    assert {status for i, (status, _, _) in enumerate(results) if i % 2} == {200}
    assert {status for i, (status, _, _) in enumerate(results) if not i % 2} == {403}


async def test_sign_url_output_is_accepted_by_the_origin(protected, tmp_path):
    config = tmp_path / "mediacore.toml"
    config.write_text(f'[auth]\nplayback_secret = "{SECRET}"\nplayback_streams = ["{STREAM}"]\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mediacore.app.cli",
        "sign-url",
        f"{protected.origin}/live/{STREAM}/index.m3u8",
        "--config",
        str(config),
        "--ttl",
        "60",
        "--viewer",
        "cli-viewer",
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    url = out.decode().strip()
    assert proc.returncode == 0 and ".cli-viewer." in url
    async with aiohttp.ClientSession() as session:
        status, body, _ = await get(session, url)
    assert status == 200 and b"cli-viewer" in body


async def test_hlsjs_plays_hls_from_the_origin_and_llhls_through_the_edge_with_a_token(protected):
    hls = await play_in_browser(f"{protected.origin}/watch/{STREAM}?ll=0&token={token()}", seconds=8)
    assert hls["started"] and hls["advanced"] >= 7 and hls["fatal"] is None, hls
    assert hls["end"]["frames"] - hls["start"]["frames"] >= 100, hls  # ~30 fps decoded, not just a clock
    ll = await play_in_browser(f"{protected.edge}/watch/{STREAM}?ll=1&token={token()}", seconds=10)
    assert ll["started"] and ll["advanced"] >= 9 and ll["fatal"] is None, ll
    assert ll["end"]["frames"] - ll["start"]["frames"] >= 150, ll
    # and without the token the page gets nowhere
    none = await play_in_browser(f"{protected.edge}/watch/{STREAM}", seconds=1, start_timeout=6)
    assert not none["started"]
