"""The origin cluster on Redis: the registry core (sans-I/O), then two real `mediacore serve`
nodes + one real redis-server + one in-process edge with both origins, real ffmpeg pushes.

Streams published to each node play through the edge (playlist, segment, LL-HLS part; hls.js
HLS and LL); a request to the node that does not own a stream gets 302 to the owner with its
query; a publish of a name the other node owns is refused; a node killed with SIGKILL drops
out of the registry within 5 s while the other node's stream keeps playing through the edge;
its stream is then republished on the survivor, continuing its playlists' sequence numbers after
a discontinuity, and plays through the edge.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from conftest import (
    ffmpeg_push_cmd,
    free_port,
    make_clip,
    play_in_browser,
    require_tool,
    start_process,
    stop_process,
    until,
)

from benchmarks.servers import running_redis, start_serve
from edge.owners import Owners, base_of
from edge.server import EdgeConfig, EdgeNode, run_edge
from mediacore.app.cluster import POSITION_SKIP, Conflict, Position, Registry, Round, position_key, stream_key
from mediacore.app.config import ConfigError, load_config
from mediacore.playlist.media import MediaPlaylist
from player_client.llhls import follow

PREFIX = "mediacore:cluster:"
TTL = 4.0
"""The nodes' [cluster] ttl here: a killed node must be gone from the registry within 5 s."""
RENEW = 0.5

# Registry core (no I/O) ------------------------------------------------------------------


def test_registry_renews_what_it_serves_releases_what_it_forgot_and_gives_up_conflicts():
    reg = Registry("http://a:8080", ttl=5.0)
    assert reg.claimed("x", "http://a:8080", 0.0)
    assert not reg.claimed("y", "http://b:8080", 0.0)  # another node holds it: refused
    first = reg.round(["z"], 1.0)
    assert first.renew == ("x", "z") and first.release == ()  # x: a claim whose stream is being set up
    assert reg.applied(first, ["http://a:8080", "http://a:8080"]) == []
    assert reg.registered == {"x", "z"}
    later = reg.round(["z"], 6.0)  # x's claim lapsed and it never became a stream: released
    assert later.renew == ("z",) and later.release == ("x",)
    assert reg.applied(later, ["http://b:8080"]) == [Conflict("z", "http://b:8080")]
    assert reg.registered == set()
    again = reg.round(["z"], 7.0)  # given up: not claimed again while it is served here
    assert again.renew == () and again.release == ()
    assert reg.applied(again, []) == []
    assert reg.round([], 8.0) == Round((), ())  # z is no longer served here: the conflict is dropped
    assert reg.round(["z"], 9.0).renew == ("z",)  # served again (republished): claimed again


def test_registry_failures_are_logged_at_powers_of_two():
    reg = Registry("http://a:8080", ttl=5.0)
    assert [reg.failed() for _ in range(8)] == [True, True, False, True, False, False, False, True]
    done = reg.round([], 0.0)
    reg.applied(done, [])
    assert reg.failures == 0


def test_positions_are_written_when_they_change_and_resume_past_a_margin_after_a_discontinuity():
    reg = Registry("http://a:8080", ttl=5.0)
    reg.claimed("x", "http://a:8080", 0.0)
    here = Position((("hls", 12, 0), ("ll-video", 30, 2)))
    assert reg.positions_due({"x": here, "y": here}) == {"x": here}  # y is not this node's
    reg.written["x"] = here
    assert reg.positions_due({"x": here}) == {}  # unchanged: not written again
    moved = Position((("hls", 13, 0), ("ll-video", 30, 2)))
    assert reg.positions_due({"x": moved}) == {"x": moved}
    assert Position.decode(moved.encode()) == moved
    assert moved.resumed("hls") == (13 + POSITION_SKIP, 1) and moved.resumed("ll-video") == (30 + POSITION_SKIP, 3)
    assert moved.resumed("ll-audio") is None
    for junk in (None, b"", b"[1]", b'{"hls": [1]}', b'{"hls": [-1, 0]}', b'{"hls": [1.5, 0]}', b"{" * 2000):
        assert Position.decode(junk) is None, junk


def test_edge_remembers_owners_for_a_while():
    owners = Owners(ttl=5.0)
    owners.learn("s", "http://b:8080", 10.0)
    assert owners.get("s", 14.9) == "http://b:8080"
    assert owners.get("s", 15.0) is None and len(owners) == 0
    owners.learn("s", "http://b:8080", 20.0)
    owners.forget("s")
    assert owners.get("s", 20.0) is None
    assert base_of("http://b:8080/live/s/index.m3u8?x=1") == "http://b:8080"
    assert base_of("/live/s/index.m3u8") is None and base_of("ftp://x/y") is None


def test_cluster_settings_are_checked():
    assert load_config(None).cluster.redis_url == ""
    with pytest.raises(ConfigError, match="cluster.renew"):
        load_config(None, {"cluster": {"ttl": 2.0, "renew": 1.5}})
    with pytest.raises(ConfigError, match="cluster.redis_url"):
        load_config(None, {"cluster": {"redis_url": "http://redis"}})
    with pytest.raises(ConfigError, match="cluster.node_url"):
        load_config(None, {"cluster": {"node_url": "origin-2:8080"}})


# Two nodes, one Redis, one edge ----------------------------------------------------------


@dataclass
class Node:
    name: str
    proc: asyncio.subprocess.Process
    rtmp_port: int
    http_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def rtmp(self, stream: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{stream}"


async def start_node(name: str, redis_url: str, directory: Path) -> Node:
    """`mediacore serve` from this tree in the cluster, up to its ready line."""
    rtmp_port, rtsp_port, http_port = free_port(), free_port(), free_port()
    config = directory / f"{name}.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nrtmp_port = {rtmp_port}\nrtsp_port = {rtsp_port}\nhttp_port = {http_port}\n'
        f"data_dir = {str(directory / name)!r}\n"
        f"[admin]\nport = 0\n[plugins]\nenabled = []\n"
        f'[cluster]\nredis_url = "{redis_url}"\nttl = {TTL}\nrenew = {RENEW}\n'
    )
    log = directory / f"{name}.log"
    proc = await start_serve(config, log)
    return Node(name, proc, rtmp_port, http_port, log)


@dataclass
class Cluster:
    a: Node
    b: Node
    edge: str
    edge_node: EdgeNode
    redis: aioredis.Redis
    http: aiohttp.ClientSession
    pushers: dict[str, asyncio.subprocess.Process]

    async def owner(self, stream: str) -> str | None:
        value = await self.redis.get(stream_key(PREFIX, stream))
        return value.decode() if value is not None else None


async def ready(http: aiohttp.ClientSession, base: str, stream: str, timeout: float = 30) -> None:
    """Until `stream` has 2 HLS segments and a LL-HLS video part, asked at `base`."""

    async def playlist(path: str) -> MediaPlaylist | None:
        async with http.get(f"{base}/live/{stream}/{path}") as r:
            return MediaPlaylist.parse(await r.text()) if r.status == 200 else None

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hls, ll = await playlist("index.m3u8"), await playlist("ll/video.m3u8")
        if hls is not None and len(hls.segments) >= 2 and ll is not None and ll.preload_hint:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"{stream} did not become ready at {base} within {timeout} s")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    require_tool("ffmpeg")
    directory = tmp_path_factory.mktemp("cluster")
    clip = make_clip()
    with running_redis(directory) as redis_url:
        a, b = await asyncio.gather(start_node("a", redis_url, directory), start_node("b", redis_url, directory))
        edge_node = EdgeNode(EdgeConfig(upstreams=[a.url, b.url], cache_mb=64))
        runner, edge_port = await run_edge(edge_node.config, "127.0.0.1", 0, edge_node)
        pushers = {
            "onA": await start_process(*ffmpeg_push_cmd(clip, a.rtmp("onA"), loop=True)),
            "onB": await start_process(*ffmpeg_push_cmd(clip, b.rtmp("onB"), loop=True)),
        }
        r = aioredis.from_url(redis_url)
        http = aiohttp.ClientSession()
        try:
            await asyncio.gather(ready(http, a.url, "onA"), ready(http, b.url, "onB"))
            yield Cluster(a, b, f"http://127.0.0.1:{edge_port}", edge_node, r, http, pushers)
        finally:
            for proc in pushers.values():
                await stop_process(proc)
            await http.close()
            await r.aclose()
            await runner.cleanup()
            for node in (a, b):
                await stop_process(node.proc)


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_each_node_registers_its_streams(cluster: Cluster):
    assert await cluster.owner("onA") == cluster.a.url
    assert await cluster.owner("onB") == cluster.b.url
    ttl = await cluster.redis.pttl(stream_key(PREFIX, "onB"))
    assert 0 < ttl <= TTL * 1000


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_the_wrong_node_redirects_to_the_owner_keeping_the_query(cluster: Cluster):
    path = "/live/onB/ll/video.m3u8?_HLS_msn=5&_HLS_part=1&token=t0k"
    async with cluster.http.get(cluster.a.url + path, allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == cluster.b.url + path
        assert r.headers["Cache-Control"] == "no-store"
    async with cluster.http.get(f"{cluster.b.url}/live/onA/index.m3u8", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == f"{cluster.a.url}/live/onA/index.m3u8"
    async with cluster.http.get(f"{cluster.a.url}/live/nowhere/index.m3u8", allow_redirects=False) as r:
        assert r.status == 404  # unknown everywhere: as on one node
    async with cluster.http.get(f"{cluster.a.url}/live/onA/index.m3u8", allow_redirects=False) as r:
        assert r.status == 200  # its own stream: served


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_streams_of_both_nodes_play_through_the_edge(cluster: Cluster):
    for stream in ("onA", "onB"):  # the edge asks node a first: onB is a redirect it follows
        base = f"{cluster.edge}/live/{stream}"
        async with cluster.http.get(f"{base}/index.m3u8") as r:
            assert r.status == 200, (stream, r.status)
            hls = MediaPlaylist.parse(await r.text())
        async with cluster.http.get(f"{base}/{hls.segments[-1].uri}") as r:
            assert r.status == 200 and len(await r.read()) > 1000
        async with cluster.http.get(f"{base}/ll/video.m3u8") as r:
            assert r.status == 200
            ll = MediaPlaylist.parse(await r.text())
        part = [p for segment in ll.segments for p in segment.parts][-1].uri
        async with cluster.http.get(f"{base}/ll/{part}") as r:
            assert r.status == 200 and len(await r.read()) > 100
    assert cluster.edge_node.redirects._value.get() >= 1
    assert cluster.edge_node.owners.get("onB", cluster.edge_node.clock()) == cluster.b.url


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_hlsjs_plays_hls_and_ll_hls_of_both_nodes_through_the_edge(cluster: Cluster):
    hls = await play_in_browser(f"{cluster.edge}/watch/onA?ll=0", seconds=6)
    assert hls["started"] and hls["advanced"] >= 5 and hls["fatal"] is None, hls
    ll = await play_in_browser(f"{cluster.edge}/watch/onB?ll=1", seconds=6)
    assert ll["started"] and ll["advanced"] >= 5 and ll["fatal"] is None, ll


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_publishing_a_name_the_other_node_owns_is_refused(cluster: Cluster):
    clip = make_clip()
    push = await start_process(*ffmpeg_push_cmd(clip, cluster.a.rtmp("onB"), loop=True))
    try:
        await asyncio.wait_for(push.wait(), 15)  # refused: ffmpeg gives up
    finally:
        await stop_process(push)
    assert push.returncode != 0
    assert await cluster.owner("onB") == cluster.b.url
    log = cluster.a.log.read_text()
    assert "stream onB is being published on another node of the cluster" in log, log[-2000:]


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_a_killed_node_leaves_the_registry_and_its_stream_moves(cluster: Cluster):
    # A LL-HLS viewer of node a's stream follows it through the edge all along.
    viewer = asyncio.ensure_future(follow(f"{cluster.edge}/live/onA/ll.m3u8", 6.0))
    await asyncio.sleep(0.5)
    before = {}
    for path in ("index.m3u8", "ll/video.m3u8", "ll/audio.m3u8"):
        async with cluster.http.get(f"{cluster.b.url}/live/onB/{path}") as r:
            before[path] = MediaPlaylist.parse(await r.text())
    killed = time.monotonic()
    cluster.b.proc.send_signal(signal.SIGKILL)
    await cluster.pushers.pop("onB").wait()  # its publisher loses the connection
    while await cluster.owner("onB") is not None:
        assert time.monotonic() - killed < 5.0, "node b's stream still registered 5 s after the kill"
        await asyncio.sleep(0.05)
    gone = time.monotonic() - killed
    print(f"node b's registration removed {gone:.2f} s after SIGKILL (ttl {TTL} s)")
    assert await cluster.owner("onA") == cluster.a.url
    stats = await viewer  # node a's stream went on playing through the edge
    assert stats.parts >= 20 and not stats.errors, (stats.parts, stats.errors)
    assert await cluster.redis.get(position_key(PREFIX, "onB")) is not None  # where its playlists stood
    # The dead node's name is free: republished on the survivor, its playlists continue there
    # after a discontinuity, past every sequence number node b handed out.
    cluster.pushers["onB"] = await start_process(*ffmpeg_push_cmd(make_clip(), cluster.a.rtmp("onB"), loop=True))
    await ready(cluster.http, cluster.a.url, "onB")
    assert await cluster.owner("onB") == cluster.a.url
    for path, old in before.items():
        async with cluster.http.get(f"{cluster.a.url}/live/onB/{path}") as r:
            new = MediaPlaylist.parse(await r.text())
        last_seen = old.media_sequence + len(old.segments) - 1
        assert last_seen < new.media_sequence <= last_seen + 1 + POSITION_SKIP + 2, (
            path,
            last_seen,
            new.media_sequence,
        )
        assert new.discontinuity_sequence == old.discontinuity_sequence + 1, path
    await ready(cluster.http, cluster.edge, "onB")  # the edge forgot the dead owner and asks node a
    async with cluster.http.get(f"{cluster.edge}/live/onB/index.m3u8") as r:
        hls = MediaPlaylist.parse(await r.text())
    async with cluster.http.get(f"{cluster.edge}/live/onB/{hls.segments[-1].uri}") as r:
        assert r.status == 200 and len(await r.read()) > 1000
    await until(lambda: cluster.a.proc.returncode is None, 1, "node a running")
