"""Publish authentication end to end: a real HTTP publish hook (an aiohttp app on a free
port), real ffmpeg pushes over RTMP and RTSP, and the scripted RTMP client where ffmpeg
cannot say it (a second source address, media sent before the publish is answered)."""

from __future__ import annotations

import asyncio
import logging
import re
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import av
import pytest
from aiohttp import web
from conftest import (
    ROOT,
    ffmpeg_push_cmd,
    free_port,
    require_tool,
    start_process,
    stop_process,
    until,
    wait_for_playlist,
)
from hostile import HealthyStream

from benchmarks.hostile_peers import FFMPEG_SDP, RtspClient, ScriptedPublisher, publish_sequence
from ingest.rtmp import amf0
from ingest.rtmp.chunk import COMMAND_AMF0
from ingest.rtmp.chunk import VIDEO as RTMP_VIDEO
from ingest.rtmp.flv import AVC_NALU, AVC_SEQUENCE_HEADER, video_payload
from mediacore.app.cli import demo_publish_key, main
from mediacore.app.config import Config, ConfigError, check_open_publish, load_config
from mediacore.app.engine import Engine
from mediacore.model.media import Kind

HOOK_TOKEN = "hook-token-4471"  # in the hook URL's query: never logged either


class Hook:
    """The publish hook: answers `status` after `delay` seconds and records every body."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.status = 200
        self.delay = 0.0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/may-publish?token={HOOK_TOKEN}"
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        assert request.query["token"] == HOOK_TOKEN
        self.seen.append(await request.json())
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/may-publish", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Engine]:
    engine = Engine(config)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


def with_hook(config: Config, hook: Hook, **auth: object) -> Config:
    config.auth.publish_hook = hook.url
    config.auth.publish_hook_timeout = 0.5
    for key, value in auth.items():
        setattr(config.auth, key, value)
    return config


async def publish_status(engine: Engine, name: str, local_host: str | None = None) -> str:
    """Publish `name` (`name` may carry ?key=K) with the scripted client; the onStatus code."""
    client = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
    await client.connect(local_host)
    try:
        status = await client.publish(name)
        return str(status[3]["code"])
    finally:
        await client.close()


def refused(engine: Engine, reason: str) -> float:
    return engine.metrics.publish_refused.labels(reason)._value.get()


# The hook -------------------------------------------------------------------------------


async def test_the_hook_admits_an_ffmpeg_push_and_hears_who_asked(config, hook, clip):
    require_tool("ffmpeg")
    async with running(with_hook(config, hook)) as engine:
        url = f"rtmp://127.0.0.1:{engine.rtmp_port}/live/shop?key=streamer-7"
        pusher = await start_process(*ffmpeg_push_cmd(clip, url))
        try:
            await until(lambda: engine.hub.is_publishing("shop"), 10, "the hook-admitted publish")
            stream = engine.hub.get("shop")
            assert stream is not None
            await until(lambda: stream.stats.frames[Kind.VIDEO] > 0, 10, "frames of the admitted stream")
        finally:
            await stop_process(pusher)
    assert hook.seen == [{"stream": "shop", "key": "streamer-7", "protocol": "rtmp", "remote": "127.0.0.1"}]


@pytest.mark.parametrize(
    "status,delay,reason",
    [(403, 0.0, "hook"), (500, 0.0, "hook"), (200, 1.5, "hook_error")],
    ids=["refused", "hook-error-status", "timeout"],
)
async def test_a_hook_that_refuses_or_times_out_refuses_the_publish(config, hook, status, delay, reason):
    hook.status, hook.delay = status, delay
    async with running(with_hook(config, hook)) as engine:
        assert await publish_status(engine, "shop?key=k") == "NetStream.Publish.Unauthorized"
        assert not engine.hub.is_publishing("shop") and engine.hub.get("shop") is None
        assert refused(engine, reason) == 1
    assert [body["stream"] for body in hook.seen] == ["shop"]


async def test_an_unreachable_hook_refuses_the_publish(config, caplog):
    config.auth.publish_hook = f"http://127.0.0.1:{free_port()}/may-publish?token={HOOK_TOKEN}"
    async with running(config) as engine:
        assert await publish_status(engine, "shop?key=k") == "NetStream.Publish.Unauthorized"
        assert engine.hub.get("shop") is None
        assert refused(engine, "hook_error") == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "mediacore.auth"]
    assert any("gave no answer for stream shop from 127.0.0.1" in line for line in lines), lines


async def test_a_revoked_publisher_is_cut_at_the_next_recheck(config, hook, clip):
    require_tool("ffmpeg")
    async with running(with_hook(config, hook, publish_hook_recheck=0.3)) as engine:
        url = f"rtmp://127.0.0.1:{engine.rtmp_port}/live/shop?key=streamer-7"
        pusher = await start_process(*ffmpeg_push_cmd(clip, url, loop=True))
        try:
            await until(lambda: engine.hub.is_publishing("shop"), 10, "the hook-admitted publish")
            await until(lambda: len(hook.seen) >= 3, 5, "re-checks of the live publisher")
            assert engine.hub.is_publishing("shop")  # re-checks that allow keep it live
            hook.status = 403
            await until(lambda: not engine.hub.is_publishing("shop"), 2, "the revoked publisher cut")
            assert refused(engine, "revoked") == 1
            # It is refused when it reconnects too: the hook still says no.
            assert await publish_status(engine, "shop?key=streamer-7") == "NetStream.Publish.Unauthorized"
        finally:
            await stop_process(pusher)
    assert all(
        body == {"stream": "shop", "key": "streamer-7", "protocol": "rtmp", "remote": "127.0.0.1"} for body in hook.seen
    )


async def test_an_rtsp_publish_goes_through_the_hook(config, hook, clip):
    require_tool("ffmpeg")
    async with running(with_hook(config, hook)) as engine:
        rtsp_tcp = ["-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp"]
        url = f"rtsp://127.0.0.1:{engine.rtsp_port}/live/cam?key=cam-key"
        pusher = await start_process(*ffmpeg_push_cmd(clip, url, output=rtsp_tcp))
        try:
            await until(lambda: engine.hub.is_publishing("cam"), 10, "the hook-admitted RTSP publish")
        finally:
            await stop_process(pusher)
        assert hook.seen == [{"stream": "cam", "key": "cam-key", "protocol": "rtsp", "remote": "127.0.0.1"}]
        hook.status = 403
        client = await RtspClient(engine.rtsp_port).open()
        reply = await client.call(
            "ANNOUNCE", url.replace("cam?", "cam2?"), "Content-Type: application/sdp\r\n", FFMPEG_SDP.encode()
        )
        client.close()
        assert reply.startswith("RTSP/1.0 401"), reply
        assert engine.hub.get("cam2") is None


# While the decision is pending ---------------------------------------------------------


def first_video(clip: Path, count: int) -> tuple[bytes, list[tuple[int, int, bool, bytes]]]:
    with av.open(str(clip)) as container:
        video = container.streams.video[0]
        avcc = bytes(video.codec_context.extradata)
        packets = []
        for p in container.demux(video):
            if p.size and len(packets) < count:
                packets.append(
                    (
                        int(p.dts * 1000 * p.time_base),
                        int((p.pts - p.dts) * 1000 * p.time_base),
                        p.is_keyframe,
                        bytes(p),
                    )
                )
    return avcc, packets


async def test_media_sent_before_the_answer_is_held_and_replayed(config, hook, clip):
    """An encoder that does not wait for NetStream.Publish.Start: what it sends while the hook
    thinks arrives after the admission, in order, none lost."""
    hook.delay = 0.3
    avcc, packets = first_video(clip, 10)
    async with running(with_hook(config, hook)) as engine:
        client = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
        await client.connect()
        burst = publish_sequence("eager?key=k", client.chunks)
        burst += client.chunks.write(6, RTMP_VIDEO, 1, 0, video_payload(True, AVC_SEQUENCE_HEADER, 0, avcc))
        for dts, cts, key, data in packets:
            burst += client.chunks.write(6, RTMP_VIDEO, 1, dts, video_payload(key, AVC_NALU, cts, data))
        client.send(burst)
        status = await client.wait_for_status()
        assert status[3]["code"] == "NetStream.Publish.Start"
        stream = engine.hub.get("eager")
        assert stream is not None
        await until(lambda: stream.stats.frames[Kind.VIDEO] == len(packets), 5, "the held frames")
        await client.close()


async def test_a_peer_that_leaves_while_the_hook_thinks_publishes_nothing(config, hook, caplog):
    hook.delay = 0.3
    async with running(with_hook(config, hook)) as engine:
        client = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
        await client.connect()
        client.send(publish_sequence("gone?key=k", client.chunks))
        await client.writer.drain()
        await until(lambda: len(hook.seen) == 1, 5, "the hook asked")
        await client.close()
        await asyncio.sleep(0.5)  # the hook answers (allows) after the peer left
        assert engine.hub.get("gone") is None
        assert not engine.rtmp.connections
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# Rate limit and takeover ----------------------------------------------------------------


async def test_failed_attempts_from_one_address_are_refused_without_asking_the_hook(config, hook):
    hook.status = 403
    async with running(with_hook(config, hook, max_failed_publishes=3, failed_publish_window=60.0)) as engine:
        for _ in range(3):
            assert await publish_status(engine, "shop?key=guess") == "NetStream.Publish.Unauthorized"
        assert len(hook.seen) == 3
        hook.status = 200  # even the right key now: the address is blocked for the window
        for _ in range(3):
            assert await publish_status(engine, "shop?key=right") == "NetStream.Publish.Unauthorized"
        assert len(hook.seen) == 3
        assert refused(engine, "hook") == 3 and refused(engine, "rate_limited") == 3
        # Another address is not affected.
        assert await publish_status(engine, "other?key=right", local_host="127.0.0.2") == "NetStream.Publish.Start"


async def test_under_a_shared_key_only_the_original_address_resumes_a_reconnecting_stream(config):
    config.auth.default_publish_key = "shared"
    async with running(config) as engine:
        assert await publish_status(engine, "shop?key=shared") == "NetStream.Publish.Start"
        await until(lambda: not engine.hub.is_publishing("shop"), 5, "the publisher gone")
        stream = engine.hub.get("shop")
        assert stream is not None and not stream.ended  # within end_grace: reconnecting
        thief = await publish_status(engine, "shop?key=shared", local_host="127.0.0.2")
        assert thief == "NetStream.Publish.Unauthorized"
        assert refused(engine, "takeover") == 1
        assert await publish_status(engine, "shop?key=shared") == "NetStream.Publish.Start"  # the original
        # Once the stream has ended, the name is free again.
        await until(lambda: not engine.hub.is_publishing("shop"), 5, "the publisher gone again")
        stream.end()
        assert await publish_status(engine, "shop?key=shared", local_host="127.0.0.2") == "NetStream.Publish.Start"


async def test_a_stranger_cannot_continue_a_streamers_playlist_beside_a_healthy_stream(
    config, clip, healthy_clip, caplog
):
    """Finding 9: under a shared key, a newcomer from another address tries to take over a
    stream whose streamer dropped, within end_grace; it is refused, logged and counted, the
    streamer resumes its own playlist, and a healthy stream beside them is untouched."""
    require_tool("ffmpeg")
    config.auth.default_publish_key = "shared"
    config.hls.end_grace = 30.0
    victim_url = ""
    async with running(config) as engine:
        victim_url = f"rtmp://127.0.0.1:{engine.rtmp_port}/live/shop?key=shared"
        async with HealthyStream(engine, healthy_clip, key="shared") as healthy:
            victim = await start_process(*ffmpeg_push_cmd(clip, victim_url, loop=True))
            await wait_for_playlist(engine.http_port, "shop", segments=1)
            await stop_process(victim)  # the streamer's connection drops
            await until(lambda: not engine.hub.is_publishing("shop"), 5, "the streamer gone")
            stream = engine.hub.get("shop")
            assert stream is not None and not stream.ended
            for _ in range(3):
                thief = await publish_status(engine, "shop?key=shared", local_host="127.0.0.2")
                assert thief == "NetStream.Publish.Unauthorized"
            assert refused(engine, "takeover") == 3
            assert not stream.publishing and stream.stats.publishes == 1, "nobody took the stream over"
            assert "only its publisher may resume it" in caplog.text
            victim = await start_process(*ffmpeg_push_cmd(clip, victim_url, loop=True))
            try:
                await until(lambda: stream.publishing, 10, "the streamer resumed")
                assert stream.stats.publishes == 2 and not stream.ended
            finally:
                await stop_process(victim)
            await healthy.check()


async def test_under_the_hook_a_different_key_cannot_resume_a_reconnecting_stream(config, hook):
    async with running(with_hook(config, hook)) as engine:
        assert await publish_status(engine, "shop?key=alice") == "NetStream.Publish.Start"
        await until(lambda: not engine.hub.is_publishing("shop"), 5, "the publisher gone")
        assert await publish_status(engine, "shop?key=mallory") == "NetStream.Publish.Unauthorized"
        assert [body["key"] for body in hook.seen] == ["alice"]  # refused before the hook
        assert await publish_status(engine, "shop?key=alice", local_host="127.0.0.2") == "NetStream.Publish.Start"


# Open publishing and the demo -----------------------------------------------------------


async def test_open_publishing_beyond_loopback_is_refused_unless_allowed(config, capsys):
    config.server.host = "0.0.0.0"
    with pytest.raises(ConfigError, match="anyone could publish.*allow_open_publish = true"):
        await Engine(config).start()
    assert main(["serve", "--host", "0.0.0.0", "--http-port", str(free_port())]) == 2
    assert "anyone could publish" in capsys.readouterr().err
    config.auth.allow_open_publish = True
    async with running(config) as engine:
        assert engine.rtmp_port
    for secured in ({"default_publish_key": "k"}, {"publish_hook": "http://127.0.0.1:1/hook"}):
        check_open_publish(load_config(None, {"server": {"host": "0.0.0.0"}, "auth": secured}))
    check_open_publish(load_config(None, {"server": {"host": "::1"}}))


def test_the_demo_makes_up_a_key_only_when_publishing_is_open():
    config = load_config(None, {"server": {"host": "0.0.0.0"}})
    key = demo_publish_key(config)
    assert len(key) >= 16 and config.auth.default_publish_key == key
    check_open_publish(config)  # the demo starts on 0.0.0.0
    assert demo_publish_key(config) == key  # and keeps it
    assert demo_publish_key(load_config(None, {"auth": {"default_publish_key": "mine"}})) == "mine"
    own = load_config(None, {"auth": {"publish_keys": {"demo": "d"}, "default_publish_key": "x"}})
    assert demo_publish_key(own) == "d"
    hooked = load_config(None, {"auth": {"publish_hook": "http://127.0.0.1:1/hook"}})
    assert demo_publish_key(hooked) == "" and hooked.auth.default_publish_key == ""


def test_the_documented_example_loads():
    guide = (ROOT / "docs" / "operator-guide.md").read_text()
    section = guide.split("### Publish authentication", 1)[1]
    snippet = re.search(r"```toml\n(.*?)```", section, re.S)
    assert snippet is not None
    config = load_config(None, tomllib.loads(snippet.group(1)))
    check_open_publish(config)  # on 0.0.0.0: the hook closes publishing
    assert config.auth.publish_keys == {"studio": "studio-secret"}
    assert config.auth.publish_hook == "https://shop.example/internal/may-publish"


# No key in any log line -----------------------------------------------------------------

SECRET = "s3cret-9f2c"


async def test_no_log_line_shows_a_publish_key(config, hook, caplog):
    caplog.set_level(logging.DEBUG)
    hook.status = 403
    async with running(with_hook(config, hook, publish_keys={"vip": "other"})) as engine:
        # RTMP: wrong app with the key in the app's query, wrong key, refused by the hook.
        client = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
        await client.connect()
        app = f"admin?key={SECRET}"
        client.send(
            client.chunks.write(
                3, COMMAND_AMF0, 0, 0, amf0.encode("connect", 1.0, {"app": app, "tcUrl": f"rtmp://h/{app}"})
            )
        )
        assert await client.closed_by_server()
        await client.close()
        assert await publish_status(engine, f"vip?key={SECRET}") == "NetStream.Publish.Unauthorized"
        assert await publish_status(engine, f"shop?key={SECRET}") == "NetStream.Publish.Unauthorized"
        # RTSP: wrong app, a malformed request line, a SETUP naming no media, refused by the hook.
        base = f"rtsp://127.0.0.1:{engine.rtsp_port}"
        for uri in (f"{base}/admin/cam?key={SECRET}", f"{base}/live/cam?key={SECRET}"):
            client = await RtspClient(engine.rtsp_port).open()
            try:
                await client.call("ANNOUNCE", uri, "Content-Type: application/sdp\r\n", FFMPEG_SDP.encode())
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            client.close()
        client = await RtspClient(engine.rtsp_port).open()
        client.writer.write(f"ANNOUNCE {base}/live/x?key={SECRET} RTSP/1.0 extra\r\n\r\n".encode())
        await asyncio.wait_for(client.reader.read(), 5)
        client.close()
        hook.status = 200
        client = await RtspClient(engine.rtsp_port).open()
        ok = await client.call(
            "ANNOUNCE", f"{base}/live/cam3?key={SECRET}", "Content-Type: application/sdp\r\n", FFMPEG_SDP.encode()
        )
        assert ok.startswith("RTSP/1.0 200"), ok
        try:
            await client.call("SETUP", f"{base}/live/cam3?key={SECRET}/nothing=9", "Transport: RTP/AVP/TCP\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        client.close()
        await until(lambda: not engine.rtsp.connections, 5, "the RTSP sessions closed")
    config.auth.publish_hook = f"http://127.0.0.1:{free_port()}/x?token={HOOK_TOKEN}"
    async with running(config) as engine:
        assert await publish_status(engine, f"shop?key={SECRET}") == "NetStream.Publish.Unauthorized"
    records = caplog.records
    assert len(records) > 10
    for record in records:
        text = record.getMessage() + (record.exc_text or "")
        assert SECRET not in text and HOOK_TOKEN not in text and "key=" not in text, text
