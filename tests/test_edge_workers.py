"""`mediacore edge --workers 2` in front of a live origin: both workers answer on the shared
port, the origin sees one request per part whichever worker a viewer reached, playlists come
pre-compressed to clients that ask for gzip, and a killed worker is replaced."""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from conftest import ROOT, ffmpeg_push_cmd, free_port, local_config, make_clip, start_process, stop_process, until
from test_edge import LL_MEDIA_ROUTE, origin_count

from edge.workers import WORKER_HEADER
from mediacore.app.engine import Engine

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
PLAYLIST_ROUTE = "/live/{stream}/ll/{rendition}.m3u8"
CONNECTIONS = 16
"""Clients on connections of their own: the kernel spreads them over both workers (all 16 on one
worker by chance: 2 in 65,536)."""


def worker_pids(supervisor: int) -> set[int]:
    return {int(pid) for pid in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()}


class Rig:
    def __init__(self, engine: Engine, edge: asyncio.subprocess.Process, port: int) -> None:
        self.engine = engine
        self.process = edge
        self.base = f"http://127.0.0.1:{port}"
        lls = engine.ll_renditions["tv"]
        self.video = lls[next(iter(lls))]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def rig():
    engine = Engine(local_config(admin={"port": 0}))
    await engine.start()
    port = free_port()
    edge = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mediacore.app.cli",
        "edge",
        "--workers",
        "2",
        "--origin",
        f"http://127.0.0.1:{engine.http_port}",
        "--host",
        "127.0.0.1",
        "--http-port",
        str(port),
        "--cache-mb",
        "32",
        "--log-level",
        "warning",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    pusher = await start_process(
        *ffmpeg_push_cmd(make_clip(), f"rtmp://127.0.0.1:{engine.rtmp_port}/live/tv", loop=True)
    )
    try:
        await until(
            lambda: (lls := engine.ll_renditions.get("tv")) is not None and all(r.ready for r in lls.values()),
            20,
            "the LL-HLS renditions",
        )
        await until(lambda: len(worker_pids(edge.pid)) == 2, 10, "two edge workers")
        yield Rig(engine, edge, port)
    finally:
        await stop_process(pusher)
        if edge.returncode is None:
            edge.terminate()
            assert await asyncio.wait_for(edge.wait(), 15) == 0
        await engine.stop()


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """One request on a connection of its own (so the kernel picks a worker for it)."""
    async with (
        aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.get(url, headers=headers or {"Accept-Encoding": "identity"}) as r,
    ):
        return r.status, await r.read(), dict(r.headers)


async def test_blocking_requests_on_both_workers_cost_the_origin_one_request_per_part(rig: Rig):
    playlist = f"{rig.base}/live/tv/ll/video.m3u8"
    workers: set[str] = set()
    parts = playlists = 0.0
    for _ in range(3):
        msn, part = rig.video.next_part()
        before_parts, before_playlists = (
            origin_count(rig.engine, LL_MEDIA_ROUTE),
            origin_count(rig.engine, PLAYLIST_ROUTE),
        )
        answers = await asyncio.gather(
            *(get(f"{playlist}?_HLS_msn={msn}&_HLS_part={part}") for _ in range(CONNECTIONS))
        )
        assert {status for status, _, _ in answers} == {200}
        assert len({body for _, body, _ in answers}) == 1  # one answer, whichever worker gave it
        assert rig.video.part_uri(msn, part) in answers[0][1].decode()
        fetched = await asyncio.gather(
            *(get(f"{rig.base}/live/tv/ll/{rig.video.part_uri(msn, part)}") for _ in range(CONNECTIONS))
        )
        assert {status for status, _, _ in fetched} == {200}
        assert {body for _, body, _ in fetched} == {
            bytes(rig.video.resource(rig.video.part_uri(msn, part), 0.0) or b"")
        }
        workers |= {headers[WORKER_HEADER] for _, _, headers in answers + fetched}
        parts += origin_count(rig.engine, LL_MEDIA_ROUTE) - before_parts
        playlists += origin_count(rig.engine, PLAYLIST_ROUTE) - before_playlists
    assert workers == {"0", "1"}
    assert parts == 3  # one origin request per part, for 2 x 16 x 3 viewer requests on two workers
    assert playlists == 3  # and one per blocking playlist request


async def test_playlists_are_served_gzip_to_clients_that_ask_and_identity_to_others(rig: Rig):
    msn, part = rig.video.next_part()
    url = f"{rig.base}/live/tv/ll/video.m3u8?_HLS_msn={msn}&_HLS_part={part}"
    plain = await asyncio.gather(*(get(url) for _ in range(4)))
    zipped = await asyncio.gather(*(get(url, {"Accept-Encoding": "gzip, deflate"}) for _ in range(4)))
    refused = await get(url, {"Accept-Encoding": "gzip;q=0, identity"})
    for status, body, headers in [*plain, refused]:
        assert status == 200 and "Content-Encoding" not in headers and headers["Vary"] == "Accept-Encoding"
        assert body == plain[0][1] and body.startswith(b"#EXTM3U")
    for status, body, headers in zipped:
        assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
        assert gzip.decompress(body) == plain[0][1]
        assert int(headers["Content-Length"]) == len(body) < len(plain[0][1])


async def test_metrics_on_the_shared_port_hold_every_workers_figures(rig: Rig):
    status, body, headers = await get(f"{rig.base}/metrics")
    assert status == 200
    hits = {
        line.split('worker="')[1][0]: float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith("mediacore_edge_hits_total{")
    }
    assert set(hits) == {"0", "1"}  # whichever worker answered, both are there
    assert sum(hits.values()) > 0


async def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(rig: Rig):
    before = worker_pids(rig.process.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    url = f"{rig.base}/live/tv/ll/video.m3u8"
    for _ in range(10):  # while it is down, new connections go to the other worker
        status, body, _ = await get(url)
        assert status == 200 and body.startswith(b"#EXTM3U")
    await until(lambda: len(worker_pids(rig.process.pid) - before) == 1, 10, "a new worker")
    assert len(worker_pids(rig.process.pid)) == 2
    seen: set[str] = set()
    for _ in range(5):  # the new worker takes connections (and its streams' upstream fetches) again
        answers = await asyncio.gather(*(get(url) for _ in range(CONNECTIONS)))
        assert {status for status, _, _ in answers} == {200}
        seen |= {headers[WORKER_HEADER] for _, _, headers in answers}
        if seen == {"0", "1"}:
            break
        await asyncio.sleep(0.2)
    assert seen == {"0", "1"}
