"""The admin listener and the public port's exposure: the operator's API (kick, key rotation
and revocation, end) works with the bearer token and is refused without it; /metrics and the
mutations are not on the public port; the public port bounds connections (per address, head
deadline) and metric labels stay bounded. The hostile peers run beside a healthy ffmpeg stream."""

from __future__ import annotations

import asyncio
import re
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from conftest import ffmpeg_push_cmd, require_tool, start_process, stop_process, until, wait_for_playlist
from hostile import HealthyStream

from mediacore.app.config import ConfigError, load_config
from mediacore.origin.admin import access_problem
from mediacore.origin.listener import HEADER_TIMEOUT, MAX_CONNECTIONS, PER_IP, ConnectionGuard, ListenerLimits

TOKEN = "t0ken-for-the-admin-api-tests"
STRANGER = "127.0.0.2"
"""A second loopback address: the hostile peer's connections come from it, so the per-address
cap that refuses it never touches the healthy stream's poller on 127.0.0.1."""
MUTATIONS = (
    ("POST", "/api/streams/{name}/kick"),
    ("POST", "/api/streams/{name}/key"),
    ("DELETE", "/api/streams/{name}/key"),
    ("POST", "/api/streams/{name}/end"),
)


def admin_url(engine, path: str) -> str:
    return f"http://127.0.0.1:{engine.admin_port}{path}"


async def call(engine, method: str, path: str, token: str | None = TOKEN) -> tuple[int, dict, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, admin_url(engine, path), headers=headers) as r:
            return r.status, dict(r.headers), await r.json()


async def push(engine, clip, name: str, key: str = "") -> asyncio.subprocess.Process:
    """ffmpeg publishing `clip` in a loop over RTMP, with `?key=` if given."""
    url = f"rtmp://127.0.0.1:{engine.rtmp_port}/live/{name}" + (f"?key={key}" if key else "")
    return await start_process(*ffmpeg_push_cmd(clip, url, loop=True))


async def exited(proc: asyncio.subprocess.Process, timeout: float = 10) -> int:
    return await asyncio.wait_for(proc.wait(), timeout)


# Access -------------------------------------------------------------------------------


def test_access_rules() -> None:
    def request(method: str, peer: str, auth: str = "") -> web.Request:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (peer, 40000) if name == "peername" else None
        headers = {"Authorization": auth} if auth else {}
        return make_mocked_request(method, "/api/streams/s/kick", headers=headers, transport=transport)

    assert access_problem(request("GET", "127.0.0.1"), "") is None, "loopback reads need no token"
    assert access_problem(request("GET", "::1"), "") is None
    assert access_problem(request("GET", "::ffff:127.0.0.1"), "") is None
    refused = access_problem(request("GET", "192.0.2.7"), "")
    assert refused is not None and refused.status == 403, "other hosts may not read without a token"
    refused = access_problem(request("GET", "192.0.2.7"), TOKEN)
    assert refused is not None and refused.status == 401
    assert access_problem(request("GET", "192.0.2.7", f"Bearer {TOKEN}"), TOKEN) is None
    refused = access_problem(request("POST", "127.0.0.1"), "")
    assert refused is not None and refused.status == 403, "no token configured: no mutations"
    assert b"set [admin] token" in refused.body  # type: ignore[operator]
    for auth in ("", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN):
        refused = access_problem(request("POST", "127.0.0.1", auth), TOKEN)
        assert refused is not None and refused.status == 401, auth
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert access_problem(request("DELETE", "127.0.0.1", f"bearer {TOKEN}"), TOKEN) is None


def test_admin_token_must_not_be_short() -> None:
    with pytest.raises(ConfigError, match="admin.token must be at least 16"):
        load_config(None, {"admin": {"token": "short"}})
    assert load_config(None, {"admin": {"token": TOKEN}}).admin.token == TOKEN


def test_connection_guard_counts_per_address_and_in_all() -> None:
    refused: list[str] = []
    guard = ConnectionGuard("http", ListenerLimits(10, 75, 2, 3), ["10.0.0.9"], refused.append)
    assert guard.admit("a") is None and guard.admit("a") is None
    assert guard.admit("a") == PER_IP
    assert guard.admit("10.0.0.9") is None, "a trusted proxy carries many viewers"
    assert guard.admit("b") == MAX_CONNECTIONS
    guard.release("a")
    assert guard.admit("b") is None and guard.open == 3
    for address in ("a", "b", "10.0.0.9"):
        guard.release(address)
    assert guard.open == 0 and guard.by_address == {}
    guard.refuse(HEADER_TIMEOUT, "c")
    assert refused == [HEADER_TIMEOUT] and guard.refused == {HEADER_TIMEOUT: 1}


# The public port ----------------------------------------------------------------------


async def test_public_port_serves_no_metrics_and_nothing_mutating(engine) -> None:
    engine.config.admin.token = TOKEN
    pub = engine.hub.publish("shop", stop=lambda reason: None)
    public = f"http://127.0.0.1:{engine.http_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{public}/metrics") as r:
            assert r.status == 404
        for method, path in MUTATIONS:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with session.request(method, public + path.format(name="shop"), headers=headers) as r:
                assert r.status in (404, 405), (method, path, r.status)
        assert engine.hub.is_publishing("shop") and "shop" not in engine.config.auth.publish_keys
        async with session.get(f"{public}/api/streams") as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
        async with session.get(admin_url(engine, "/metrics")) as r:
            assert r.status == 200 and "mediacore_streams" in await r.text()
            assert "Access-Control-Allow-Origin" not in r.headers
        for path in ("/api/streams", "/healthz", "/nosuch"):
            async with session.get(admin_url(engine, path), headers={"Origin": "https://evil.example"}) as r:
                assert "Access-Control-Allow-Origin" not in r.headers, path
        async with session.options(
            admin_url(engine, "/api/streams/shop/kick"),
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        ) as r:
            assert r.status in (401, 405) and "Access-Control-Allow-Origin" not in r.headers
            assert "Access-Control-Allow-Methods" not in r.headers and (await r.json())["error"]
        # The operator's choices: CORS for one shop's origin only; metrics public again.
        engine.config.http.cors_origin = "https://shop.example"
        engine.config.http.public_metrics = True
        await engine.stop_http()
        await engine.start_http()
        async with session.get(f"{public}/healthz") as r:
            assert r.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        async with session.get(f"{public}/metrics") as r:
            assert r.status == 200
    pub.close()


async def test_admin_reads_and_errors_are_json(engine) -> None:
    engine.hub.publish("shop", stop=lambda reason: None)
    async with aiohttp.ClientSession() as session:
        async with session.get(admin_url(engine, "/api/streams")) as r:
            (info,) = await r.json()
        assert info["name"] == "shop" and info["state"] == "live"
        async with session.get(admin_url(engine, "/healthz")) as r:
            assert await r.json() == {"status": "ok", "live_streams": 1, "failed_streams": []}
    status, _, body = await call(engine, "POST", "/api/streams/shop/kick")
    assert status == 403 and "set [admin] token" in body["error"]
    assert engine.hub.is_publishing("shop")
    engine.config.admin.token = TOKEN
    assert (await call(engine, "POST", "/api/streams/nosuch/kick"))[0] == 404
    assert (await call(engine, "POST", "/api/streams/..%2Fx/kick"))[0] in (400, 404)
    assert (await call(engine, "POST", "/api/streams/nosuch/end"))[0] == 404
    engine.hub.publish("raw")  # a raw RTP input: nothing can stop it from here
    status, _, body = await call(engine, "POST", "/api/streams/raw/kick")
    assert status == 409 and "cannot be stopped" in body["error"]
    assert (await call(engine, "POST", "/api/streams/raw/end"))[0] == 409
    assert engine.hub.is_publishing("raw")


# Mutations against a real ffmpeg publisher ---------------------------------------------


@pytest.mark.slow
async def test_kick_needs_the_token_and_disconnects_the_publisher(engine, clip) -> None:
    require_tool("ffmpeg")
    engine.config.admin.token = TOKEN
    proc = await push(engine, clip, "shop")
    try:
        await until(lambda: engine.hub.is_publishing("shop"), 15, "ffmpeg publishing")
        for token in (None, "", "wrong-token-of-the-right-length"):
            status, headers, body = await call(engine, "POST", "/api/streams/shop/kick", token)
            assert status == 401 and "Bearer" in body["error"], (token, status)
            assert "Access-Control-Allow-Origin" not in headers
        assert engine.hub.is_publishing("shop") and proc.returncode is None, "a refused kick changes nothing"
        status, headers, body = await call(engine, "POST", "/api/streams/shop/kick")
        assert status == 200 and body == {"stream": "shop", "kicked": True}
        assert not engine.hub.is_publishing("shop")
        assert await exited(proc) != 0, "ffmpeg loses its connection"
        status, _, body = await call(engine, "POST", "/api/streams/shop/kick")
        assert status == 409 and "not live" in body["error"]
        async with aiohttp.ClientSession() as session:
            async with session.get(admin_url(engine, "/api/streams")) as r:
                assert (await r.json())[0]["state"] == "reconnecting"
    finally:
        await stop_process(proc)


@pytest.mark.slow
async def test_rotated_key_replaces_the_old_one_and_revoked_key_locks_the_stream(engine, clip) -> None:
    require_tool("ffmpeg")
    engine.config.admin.token = TOKEN
    engine.config.auth.publish_keys["shop"] = "the-original-key"
    proc = await push(engine, clip, "shop", "the-original-key")
    try:
        await until(lambda: engine.hub.is_publishing("shop"), 15, "ffmpeg publishing with the original key")
        assert (await call(engine, "POST", "/api/streams/shop/key", None))[0] == 401
        assert engine.config.auth.publish_keys["shop"] == "the-original-key"
        status, headers, body = await call(engine, "POST", "/api/streams/shop/key")
        assert status == 200 and body["stream"] == "shop" and body["kicked"] is True
        assert headers["Cache-Control"] == "no-store"
        new_key = body["key"]
        assert len(new_key) >= 32 and new_key != "the-original-key"
        assert await exited(proc) != 0, "the publisher with the old key is kicked"
        proc = await push(engine, clip, "shop", "the-original-key")
        assert await exited(proc) != 0, "the old key is refused"
        assert not engine.hub.is_publishing("shop")
        proc = await push(engine, clip, "shop", new_key)
        await until(lambda: engine.hub.is_publishing("shop"), 15, "ffmpeg publishing with the new key")

        status, _, body = await call(engine, "DELETE", "/api/streams/shop/key")
        assert status == 200 and body == {"stream": "shop", "revoked": True, "kicked": True}
        assert await exited(proc) != 0
        proc = await push(engine, clip, "shop", new_key)
        assert await exited(proc) != 0, "a revoked key is refused"
        assert not engine.hub.is_publishing("shop")
        assert new_key not in engine.config.auth.publish_keys.values()
    finally:
        await stop_process(proc)


@pytest.mark.slow
async def test_end_writes_endlist_at_once_and_a_republish_starts_afresh(engine, clip) -> None:
    require_tool("ffmpeg")
    engine.config.admin.token = TOKEN
    engine.config.hls.end_grace = 60.0
    engine.lifecycle.end_grace = 60.0  # a normal end would take a minute
    proc = await push(engine, clip, "shop")
    try:
        await wait_for_playlist(engine.http_port, "shop", segments=1)
        status, _, body = await call(engine, "POST", "/api/streams/shop/end")
        assert status == 200 and body == {"stream": "shop", "ended": True, "kicked": True}
        assert await exited(proc) != 0
        playlist = f"http://127.0.0.1:{engine.http_port}/live/shop/index.m3u8"
        ll = f"http://127.0.0.1:{engine.http_port}/live/shop/ll/video.m3u8"
        texts: dict[str, str] = {}

        async def fetch_all() -> None:
            async with aiohttp.ClientSession() as session:
                for url in (playlist, ll):
                    async with session.get(url) as r:
                        texts[url] = await r.text()

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3
        while True:
            await fetch_all()
            if all("#EXT-X-ENDLIST" in t for t in texts.values()) or loop.time() > deadline:
                break
            await asyncio.sleep(0.1)
        assert all("#EXT-X-ENDLIST" in t for t in texts.values()), texts
        assert (await call(engine, "POST", "/api/streams/shop/end"))[0] == 409
        old_sequence = engine.stores["shop"].discontinuity_sequence
        proc = await push(engine, clip, "shop")
        await until(lambda: engine.hub.is_publishing("shop"), 15, "the republish")
        stream = engine.hub.get("shop")
        assert stream is not None and not stream.ended
        assert engine.stores["shop"].discontinuity_sequence == old_sequence + 1, "a fresh store, as after any end"
        await until(lambda: engine.stores["shop"].ready, 15, "the fresh playlist")
        assert "#EXT-X-ENDLIST" not in engine.stores["shop"].playlist_text()
    finally:
        await stop_process(proc)


# Hostile peers beside a healthy stream -------------------------------------------------


async def slow_header(port: int) -> tuple[bytes, float]:
    """One slowloris connection from STRANGER: a request head dribbled a line every 0.3 s;
    returns what the server sent back and how long the connection lived."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(STRANGER, 0))
    received = b""
    try:
        writer.write(b"GET /live/healthy/index.m3u8 HTTP/1.1\r\nHost: origin\r\n")
        for i in range(200):
            try:
                received += await asyncio.wait_for(reader.read(1024), 0.3)
                if reader.at_eof():
                    break
            except TimeoutError:
                writer.write(b"X-Slow-%d: 1\r\n" % i)
                await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
    return received, loop.time() - start


def refused_count(engine, reason: str) -> float:
    value = engine.metrics.registry.get_sample_value("mediacore_http_refused_connections_total", {"reason": reason})
    return value or 0.0


@pytest.mark.slow
async def test_slowloris_and_strangers_on_the_public_port_beside_a_healthy_stream(engine, healthy_clip, caplog) -> None:
    require_tool("ffmpeg")
    engine.config.http.header_timeout = 2.0
    engine.config.http.max_connections_per_ip = 100
    engine.config.admin.token = TOKEN
    await engine.stop_http()
    await engine.start_http()
    async with HealthyStream(engine, healthy_clip) as healthy:
        public = f"http://127.0.0.1:{engine.http_port}"
        connector = aiohttp.TCPConnector(local_addr=(STRANGER, 0))
        async with aiohttp.ClientSession(connector=connector) as stranger:
            async with stranger.get(f"{public}/metrics") as r:
                assert r.status == 404
            for method, path in MUTATIONS:
                headers = {"Authorization": f"Bearer {TOKEN}"}  # even with the token: not here
                async with stranger.request(method, public + path.format(name="healthy"), headers=headers) as r:
                    assert r.status in (404, 405)
        results = await asyncio.gather(*(slow_header(engine.http_port) for _ in range(200)))
        refused = [(got, lived) for got, lived in results if got.startswith(b"HTTP/1.1 429")]
        timed_out = [(got, lived) for got, lived in results if got == b""]
        assert len(refused) == 100 and len(timed_out) == 100, [got[:40] for got, _ in results][:5]
        assert all(lived < 1.5 for _, lived in refused), "refused at once"
        assert all(1.5 < lived < 6 for _, lived in timed_out), "dribbling does not extend the head deadline"
        assert refused_count(engine, "per_ip") == 100 and refused_count(engine, "header_timeout") == 100
        assert engine.hub.is_publishing("healthy")
        await healthy.check()
    messages = [r.getMessage() for r in caplog.records if r.name == "mediacore.http"]
    assert any("more than 100 connections from one address" in m for m in messages)
    assert any("no complete request head within 2 s" in m for m in messages)
    assert len(messages) < 40, "refusals are logged, not flooded"


async def test_metric_labels_stay_bounded_under_junk(engine) -> None:
    """10 000 junk paths and stream names add no series to /metrics: routes are templates,
    stream series are the hub's streams (at most [hub] max_streams, gone when forgotten)."""
    engine.config.hub.max_streams = 3
    public = f"http://127.0.0.1:{engine.http_port}"

    async def scrape() -> set[str]:
        async with aiohttp.ClientSession() as session, session.get(admin_url(engine, "/metrics")) as r:
            text = await r.text()
        return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}

    junk = (
        "/junk-{i}",
        "/live/name{i}/index.m3u8",
        "/live/name{i}/ll/video.m3u8",
        "/live/name{i}/ll/v-abc-{i}.1.m4s",
        "/live/name{i}/abc-{i}.ts",
        "/watch/na%20me{i}",
    )
    connector = aiohttp.TCPConnector(limit=20)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(path: str) -> None:
            async with session.get(public + path) as r:
                await r.read()

        async def flood(first: int, count: int) -> None:
            paths = [junk[i % len(junk)].format(i=i) for i in range(first, first + count)]
            for start in range(0, len(paths), 200):
                await asyncio.gather(*(get(p) for p in paths[start : start + 200]))

        await flood(0, 60)  # every kind of junk once: its route and status series exist
        for i in range(3):
            engine.hub.publish(f"s{i}").close()
        before = await scrape()
        await flood(60, 10_000)
        refused = 0
        for i in range(3, 1000):
            try:
                engine.hub.publish(f"s{i}")
            except Exception:
                refused += 1
        after = await scrape()
    assert refused == 997
    grown = {s for s in after - before if not re.match(r"mediacore_admin_requests", s)}
    assert grown == set(), sorted(grown)[:10]
    assert len(after) < 400, len(after)
    streams = {m.group(1) for s in after for m in [re.search(r'stream="([^"]*)"', s)] if m}
    assert streams == {"s0", "s1", "s2"}
    for name in ("s0", "s1", "s2"):
        engine.hub.remove(name)
    assert not {s for s in await scrape() if 'stream="s' in s}, "a forgotten stream's series go with it"


def test_the_operator_guide_admin_example_loads(tmp_path) -> None:
    from conftest import ROOT

    guide = (ROOT / "docs" / "operator-guide.md").read_text()
    section = guide.split("### The admin listener and API", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "admin.toml"
    path.write_text(example)
    admin = load_config(path).admin
    assert (admin.host, admin.port) == ("127.0.0.1", 8090) and len(admin.token) >= 16
