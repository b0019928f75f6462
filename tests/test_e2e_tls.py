"""RTMPS and RTSPS: TLS listeners beside the plain ones, with a self-signed certificate made
here with the openssl CLI. ffmpeg publishes over rtmps:// while another ffmpeg publishes
over plain RTMP to the same server, ffmpeg publishes over rtsps:// (TCP interleaved inside
TLS), both streams' segments are probed; a peer that never finishes the TLS handshake is
dropped after [rtmp]/[rtsp] tls_handshake_timeout, and the connection caps count TLS
connections as they count plain ones."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import (
    ffmpeg_push_cmd,
    free_port,
    make_clip,
    require_tool,
    start_process,
    stop_process,
    wait_for_playlist,
)

from mediacore.app.config import Config, ConfigError, load_config
from mediacore.app.engine import Engine
from mediacore.model.media import Kind

pytestmark = pytest.mark.slow

HANDSHAKE_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    require_tool("openssl")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_config(config: Config, certificate: tuple[Path, Path]) -> Config:
    config.server.tls_cert, config.server.tls_key = str(certificate[0]), str(certificate[1])
    config.rtmp.tls_port = free_port()
    config.rtsp.tls_port = free_port()
    config.rtmp.tls_handshake_timeout = config.rtsp.tls_handshake_timeout = HANDSHAKE_TIMEOUT
    return config


@pytest.fixture
async def tls_engine(tls_config: Config):
    eng = Engine(tls_config)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.stop()


async def probe_last_segment(http_port: int, name: str) -> dict[str, dict]:
    """ffprobe of the newest segment of a stream's HLS playlist: its streams by type."""
    async with aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{http_port}/live/{name}/"
        async with session.get(base + "index.m3u8") as resp:
            playlist = await resp.text()
        uri = [line for line in playlist.splitlines() if line and not line.startswith("#")][-1]
        async with session.get(base + uri) as resp:
            data = await resp.read()
    probe = await asyncio.create_subprocess_exec(
        "ffprobe",
        "-v",
        "error",
        "-show_streams",
        "-of",
        "json",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await probe.communicate(data)
    assert probe.returncode == 0, err.decode()
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


def check_probe(streams: dict[str, dict]) -> None:
    video, audio = streams["video"], streams["audio"]
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 1280, 720)
    assert (audio["codec_name"], int(audio["sample_rate"])) == ("aac", 48000)


async def test_rtmps_publish_plays_beside_plain_rtmp(tls_engine):
    require_tool("ffmpeg")
    clip = make_clip()
    secure = ffmpeg_push_cmd(
        clip,
        f"rtmps://127.0.0.1:{tls_engine.rtmps_port}/live/secure",
        output=["-c", "copy", "-tls_verify", "0", "-f", "flv"],
    )
    plain = ffmpeg_push_cmd(clip, f"rtmp://127.0.0.1:{tls_engine.rtmp_port}/live/plain")
    pushers = [await start_process(*secure), await start_process(*plain)]
    try:
        for name in ("secure", "plain"):
            await wait_for_playlist(tls_engine.http_port, name, segments=2, timeout=40)
        for name in ("secure", "plain"):
            check_probe(await probe_last_segment(tls_engine.http_port, name))
        for pusher in pushers:
            assert await asyncio.wait_for(pusher.wait(), 40) == 0, (await pusher.stderr.read()).decode()[-2000:]
    finally:
        for pusher in pushers:
            await stop_process(pusher)
    secure_stream, plain_stream = tls_engine.hub.get("secure"), tls_engine.hub.get("plain")
    # The same clip through both: every frame arrives over each.
    assert secure_stream.stats.frames == plain_stream.stats.frames
    assert secure_stream.stats.frames[Kind.VIDEO] == 300


async def test_rtsps_publish_plays(tls_engine):
    require_tool("ffmpeg")
    clip = make_clip()
    url = f"rtsps://127.0.0.1:{tls_engine.rtsps_port}/live/secure-rtsp"
    pusher = await start_process(
        *ffmpeg_push_cmd(clip, url, output=["-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", "-tls_verify", "0"])
    )
    try:
        await wait_for_playlist(tls_engine.http_port, "secure-rtsp", segments=2, timeout=40)
        check_probe(await probe_last_segment(tls_engine.http_port, "secure-rtsp"))
        assert await asyncio.wait_for(pusher.wait(), 40) == 0, (await pusher.stderr.read()).decode()[-2000:]
    finally:
        await stop_process(pusher)
    assert tls_engine.hub.get("secure-rtsp").stats.frames[Kind.VIDEO] == 300


async def stalled_until_dropped(port: int, hello: bytes) -> float:
    """Open TCP, send `hello` (nothing, or a cut ClientHello) and never finish TLS: seconds
    until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    writer.write(hello)
    try:
        while await asyncio.wait_for(reader.read(65536), HANDSHAKE_TIMEOUT + 10):
            pass  # the server's reply to a partial hello, if any; then EOF
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return time.monotonic() - start


CUT_CLIENT_HELLO = bytes.fromhex("16030100c8010000c40303") + bytes(20)  # a record header promising 200 bytes


async def test_stalled_tls_handshakes_are_dropped(tls_engine):
    ports = (tls_engine.rtmps_port, tls_engine.rtsps_port)
    times = await asyncio.gather(*(stalled_until_dropped(p, h) for p in ports for h in (b"", CUT_CLIENT_HELLO)))
    assert all(HANDSHAKE_TIMEOUT * 0.8 <= t <= HANDSHAKE_TIMEOUT + 3 for t in times), times
    assert not tls_engine.rtmp.connections and not tls_engine.rtsp.connections


async def dropped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether the server closes this connection (EOF or reset) before it sends anything."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True
    finally:
        writer.close()


async def test_connection_caps_count_tls_connections(tls_config):
    tls_config.rtmp.max_connections_per_ip = 2
    tls_config.rtsp.max_connections_per_ip = 2
    engine = Engine(tls_config)
    await engine.start()
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    try:
        for server, port, plain in (
            (engine.rtmp, engine.rtmps_port, engine.rtmp_port),
            (engine.rtsp, engine.rtsps_port, engine.rtsp_port),
        ):
            refused = server.refused
            kept = [await asyncio.open_connection("127.0.0.1", port, ssl=client) for _ in range(2)]
            # A plain connection counts with the TLS ones: the third from this address goes.
            assert await dropped(*await asyncio.open_connection("127.0.0.1", plain))
            assert await dropped(*await asyncio.open_connection("127.0.0.1", port, ssl=client))
            assert server.refused == refused + 2
            for _, w in kept:
                w.close()
    finally:
        await engine.stop()


def test_tls_port_needs_a_certificate():
    with pytest.raises(ConfigError, match="rtmp.tls_port needs server.tls_cert"):
        load_config(None, {"rtmp": {"tls_port": 1936}})
    with pytest.raises(ConfigError, match="rtsp.tls_handshake_timeout must be positive"):
        load_config(None, {"rtsp": {"tls_handshake_timeout": 0}})


async def test_unreadable_certificate_stops_the_start(tls_config, tmp_path):
    tls_config.server.tls_cert = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="server.tls_cert"):
        await Engine(tls_config).start()
