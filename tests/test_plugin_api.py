"""The plugin API end to end: a plugin written against mediacore.plugins.api only, run by a
real engine with a real ffmpeg push, hears the stream and its viewers come and go, serves
its routes, pins timed metadata into the playlists, and learns who calls it from a verified
JWT. A plugin hook that raises does not hurt the stream."""

from __future__ import annotations

import asyncio

import aiohttp
import jwt
import pytest
from conftest import ffmpeg_push_cmd, require_tool, start_process, stop_process, until, wait_for_playlist
from prometheus_client import Counter

from mediacore.access.identity import IdentityError, Role, TokenCache, issue, verify
from mediacore.app.config import ConfigError, load_config
from mediacore.app.engine import Engine
from mediacore.plugins.api import PluginContext, PluginError
from mediacore.plugins.api import Role as ApiRole

SECRET = "a-shared-secret-of-at-least-32-bytes!!"


class Recorder:
    """A plugin that records what it hears and echoes who calls it."""

    name = "recorder"

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []
        self.context: PluginContext | None = None
        self.stopped = False

    async def start(self, context: PluginContext) -> None:
        self.context = context
        self.calls = Counter("recorder_calls", "calls", registry=context.registry)
        context.on_stream_published(lambda s: self.events.append(("published", s)))
        context.on_stream_unpublished(lambda s: self.events.append(("unpublished", s)))
        context.on_viewer_joined(lambda s, v: self.events.append(("joined", s)))
        context.on_viewer_left(lambda s, v: self.events.append(("left", s)))
        context.on_stream_published(self.broken_hook)
        context.add_route("GET", "/api/whoami", self.whoami)
        context.add_route("POST", "/api/streams/{stream}/pin", self.pin)
        context.add_websocket("/live/{stream}/echo", self.echo)

    def broken_hook(self, stream: str) -> None:
        raise RuntimeError("a plugin bug")

    async def whoami(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        assert self.context is not None
        self.calls.inc()
        try:
            who = self.context.identity(request)
        except IdentityError as e:
            return aiohttp.web.json_response({"error": str(e)}, status=401)
        if who is None:
            return aiohttp.web.json_response({"sub": None})
        return aiohttp.web.json_response({"sub": who.sub, "role": who.role.label, "host": who.may(ApiRole.HOST)})

    async def pin(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        assert self.context is not None
        stream = self.context.stream(request.match_info["stream"])
        if stream is None:
            return aiohttp.web.json_response({"error": "no such stream"}, status=404)
        item = stream.add_metadata({"X-PRODUCT-ID": "sku-1"}, duration=5.0)
        return aiohttp.web.json_response({"id": item.id, "start_date": item.start_date}, status=201)

    async def echo(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        assert self.context is not None
        ws = aiohttp.web.WebSocketResponse()
        await ws.prepare(request)
        who = self.context.identity(request)
        await ws.send_json({"stream": request.match_info["stream"], "sub": who.sub if who else None})
        await ws.close()
        return ws

    async def stop(self) -> None:
        self.stopped = True


async def test_a_plugin_hears_the_stream_serves_routes_and_pins_metadata(config, clip):
    require_tool("ffmpeg")
    config.auth.jwt_secret = SECRET
    config.http.viewer_timeout = 1.5
    engine = Engine(config)
    recorder = Recorder()
    engine.plugins = [recorder]
    await engine.start()
    pusher = None
    try:
        pusher = await start_process(
            *ffmpeg_push_cmd(clip, f"rtmp://127.0.0.1:{engine.rtmp_port}/live/shop", loop=True)
        )
        await wait_for_playlist(engine.http_port, "shop", segments=1)
        assert ("published", "shop") in recorder.events  # the broken hook beside it changed nothing
        base = f"http://127.0.0.1:{engine.http_port}"
        async with aiohttp.ClientSession(base) as http:
            async with http.get("/live/shop/index.m3u8") as r:
                assert r.status == 200
            await until(lambda: ("joined", "shop") in recorder.events, 5, "the viewer joined")
            await until(lambda: ("left", "shop") in recorder.events, 5, "the viewer left")

            async with http.post("/api/streams/shop/pin") as r:
                assert r.status == 201
                card = await r.json()

            async def listed() -> bool:
                async with http.get("/live/shop/index.m3u8") as r:
                    return f'ID="{card["id"]}"' in await r.text()

            for _ in range(100):
                if await listed():
                    break
                await asyncio.sleep(0.1)
            assert await listed(), "the pinned card reached the playlist"
            async with http.post("/api/streams/nope/pin") as r:
                assert r.status == 404

            now = engine.wall_clock()
            host = issue(SECRET.encode(), "alice", Role.HOST, 60, now)
            async with http.get("/api/whoami", headers={"Authorization": f"Bearer {host}"}) as r:
                assert await r.json() == {"sub": "alice", "role": "host", "host": True}
            async with http.get("/api/whoami") as r:
                assert await r.json() == {"sub": None}
            expired = issue(SECRET.encode(), "alice", Role.HOST, 60, now - 120)
            forged = issue(b"another-secret-of-at-least-32-bytes!!!", "mallory", Role.ADMIN, 60, now)
            for bad in (expired, forged, "garbage"):
                async with http.get("/api/whoami", headers={"Authorization": f"Bearer {bad}"}) as r:
                    assert r.status == 401
            async with http.ws_connect(f"/live/shop/echo?access_token={host}") as ws:
                assert await ws.receive_json() == {"stream": "shop", "sub": "alice"}
        admin = f"http://127.0.0.1:{engine.admin_port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(admin) as r:
            assert "recorder_calls_total 5.0" in await r.text()
        await stop_process(pusher)
        pusher = None
        await until(lambda: ("unpublished", "shop") in recorder.events, 5, "unpublished heard")
    finally:
        if pusher is not None:
            await stop_process(pusher)
        await engine.stop()
    assert recorder.stopped


async def test_plugins_register_routes_only_in_their_own_space(config):
    class Greedy(Recorder):
        async def start(self, context: PluginContext) -> None:
            context.add_route("GET", "/live/{stream}/index.m3u8", self.whoami)

    engine = Engine(config)
    engine.plugins = [Greedy()]
    with pytest.raises(PluginError, match="under /api/"):
        await engine.start()
    await engine.stop()


def test_identity_tokens():
    secret = SECRET.encode()
    token = issue(secret, "bob", Role.MODERATOR, 10, 1000.0)
    who = verify(secret, token, 1005.0)
    assert who.sub == "bob" and who.role is Role.MODERATOR and who.may(Role.VIEWER) and not who.may(Role.HOST)
    with pytest.raises(IdentityError, match="expired"):
        verify(secret, token, 1010.0)
    unsigned = jwt.encode({"sub": "x", "role": "admin", "exp": 2000}, key=None, algorithm="none")
    with pytest.raises(IdentityError):
        verify(secret, unsigned, 1000.0)
    no_exp = jwt.encode({"sub": "x", "role": "admin"}, secret, algorithm="HS256")
    with pytest.raises(IdentityError):
        verify(secret, no_exp, 1000.0)
    bad_role = jwt.encode({"sub": "x", "role": "root", "exp": 2000}, secret, algorithm="HS256")
    with pytest.raises(IdentityError, match="role"):
        verify(secret, bad_role, 1000.0)
    with pytest.raises(IdentityError, match="too long"):
        verify(secret, "x" * 5000, 1000.0)


def test_token_cache_answers_as_verify_and_checks_exp_on_every_hit():
    secret = SECRET.encode()
    cache = TokenCache(secret, capacity=2)
    token = issue(secret, "bob", Role.MODERATOR, 10, 1000.0)
    assert cache.verify(token, 1001.0) == verify(secret, token, 1001.0)
    assert cache.verify(token, 1009.0).sub == "bob" and len(cache) == 1  # a hit
    with pytest.raises(IdentityError, match="expired"):
        cache.verify(token, 1010.0)
    assert len(cache) == 0
    other = issue(b"another-secret-of-32-bytes-or-more!!", "eve", Role.ADMIN, 10, 1000.0)
    for _ in range(2):  # refused each time, never remembered
        with pytest.raises(IdentityError):
            cache.verify(other, 1001.0)
    assert len(cache) == 0
    for sub in ("a", "b", "c"):
        cache.verify(issue(secret, sub, Role.VIEWER, 10, 1000.0), 1001.0)
    assert len(cache) == 2, "bounded: the least recently used is dropped"


def test_plugin_settings_and_names_are_checked():
    with pytest.raises(ConfigError, match="unknown plugin"):
        load_config(None, {"plugins": {"enabled": ["nope"]}})
    with pytest.raises(ConfigError, match="jwt_secret"):
        load_config(None, {"auth": {"jwt_secret": "short"}})


def test_with_workers_a_plugin_sees_the_machine_s_streams_and_its_machine_wide_hooks_run_at_home():
    """`serve --workers N`: a stream another worker serves exists for every worker's plugins
    (live; its metadata is added by its owner); a machine-wide viewer hook runs on the home
    worker, for the events the others relay, and never where the stream lives."""
    from mediacore.app.plugins import JOINED, LEFT, Context, Hooks, Machine
    from mediacore.hub.hub import Hub
    from mediacore.model.metadata import MetadataError

    config = load_config()
    relayed: list[tuple[str, str, str]] = []
    worker = Hooks()
    worker.machine = Machine(lambda: {"elsewhere": 0}, False, lambda *event: relayed.append(event))
    context = Context("t", config, Hub(config.hub), worker, [], set(), {}, None, b"k" * 32, lambda: 0.0, lambda: 0.0)  # type: ignore[arg-type]
    seen: list[tuple[str, str, str]] = []
    local: list[tuple[str, str]] = []
    context.on_viewer_joined(lambda s, v: seen.append((JOINED, s, v)), machine=True)
    context.on_viewer_left(lambda s, v: seen.append((LEFT, s, v)), machine=True)
    context.on_viewer_joined(lambda s, v: local.append((s, v)))
    stream = context.stream("elsewhere")
    assert stream is not None and stream.publishing and context.stream_names() == ["elsewhere"]
    with pytest.raises(MetadataError):
        stream.add_metadata({"title": "x"})
    assert context.stream("nowhere") is None
    worker.viewer_joined("mine", "v1")
    worker.viewer_left("mine", "v1")
    assert seen == [] and local == [("mine", "v1")]  # the owner's own hooks run here; the machine's go home
    assert relayed == [(JOINED, "mine", "v1"), (LEFT, "mine", "v1")]
    home = Hooks()
    home.machine = Machine(dict, True, lambda *event: relayed.append(event))
    Context(
        "t", config, Hub(config.hub), home, [], set(), {}, None, b"k" * 32, lambda: 0.0, lambda: 0.0
    ).on_viewer_joined(  # type: ignore[arg-type]
        lambda s, v: seen.append((JOINED, s, v)), machine=True
    )
    home.relayed(JOINED, "theirs", "v2")  # from another worker
    home.viewer_joined("ours", "v3")  # a stream of the home worker itself
    home.relayed("bogus", "theirs", "v2")
    assert seen == [(JOINED, "theirs", "v2"), (JOINED, "ours", "v3")] and len(relayed) == 2
