"""`mediacore serve --workers 2`: the parent's balance and the run directory's owner files
(sans-I/O and file-level units), then one real server with four ffmpeg publishers, every
stream played by hls.js (HLS and LL-HLS) on the shared public port, and LL-HLS blocking
reloads through a worker that does not own the stream timed against the owner."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import (
    ROOT,
    ffmpeg_push_cmd,
    free_port,
    require_tool,
    run_harness,
    start_process,
    stop_process,
    until,
    wait_for_playlist,
)

from benchmarks.servers import READY_LINE, SERVE_TIMEOUT, serve_command, serve_env
from mediacore.app.balance import HANDOFF_SETTLE, PREFERENCE_TTL, Balancer
from mediacore.app.config import AuthConfig, Config
from mediacore.app.local_owners import LocalOwners, SharedPublishKeys, WorkerInfo
from mediacore.app.publish_auth import PublishPolicy
from mediacore.app.worker import JWT_SECRET_ENV, OWNER_CLAIM_TTL, WorkerLink, WorkerRole, take_jwt_secret
from mediacore.hub.publisher import PublishAttempt
from mediacore.origin.peers import BUFFER_UP_TO, HOP_HEADER, WorkerRoutes, forward
from plugins.accounts import manage
from plugins.chat.protocol import MSGPACK_PROTOCOL

STREAMS = 4
PARTS_TIMED = 25
"""Blocking reloads timed per stream (one per part: 0.2 s each)."""
ANSWERED_WITHIN = 0.010
"""p99 seconds from a part's completion to a blocked reload's answer through another worker."""
TIMING_ROUNDS = 2
"""Rounds of PARTS_TIMED reloads per stream until one meets ANSWERED_WITHIN: a 2-core machine
shared with other jobs can hold a process off the CPU for milliseconds now and then, which a
p99 over 100 reloads shows; a second round tells that from a worker that is slow."""
PLAY_SECONDS = 6


# Balance ---------------------------------------------------------------------------------


def test_balancer_spreads_a_burst_of_connections_evenly_and_deterministically():
    balancer = Balancer()
    picks = [balancer.pick({0, 1}, {}, now=100.0 + i * 0.01) for i in range(4)]
    assert picks == [0, 1, 0, 1]


def test_balancer_sends_a_refused_address_to_the_holder_once():
    balancer = Balancer()
    balancer.prefer("10.0.0.7", 1, now=0.0)
    assert balancer.pick({0, 1}, {1: 5}, now=1.0, address="10.0.0.8") == 0  # another address
    assert balancer.pick({0, 1}, {1: 5}, now=1.0, address="10.0.0.7") == 1  # the holder, despite its load
    assert balancer.pick({0, 1}, {1: 5}, now=1.0, address="10.0.0.7") == 0  # once
    balancer.prefer("10.0.0.7", 1, now=2.0)
    assert balancer.pick({0, 1}, {1: 5}, now=2.0 + PREFERENCE_TTL, address="10.0.0.7") == 0  # expired
    balancer.prefer("10.0.0.7", 1, now=100.0)
    assert balancer.pick({0}, {}, now=100.0, address="10.0.0.7") == 0  # the holder is not live


def test_balancer_counts_owned_streams_once_connections_have_settled():
    balancer = Balancer()
    assert balancer.pick({0, 1}, {0: 3, 1: 1}, now=0.0) == 1
    assert balancer.pick({0, 1}, {0: 3, 1: 2}, now=1.0) == 1  # claimed meanwhile: counted once
    assert balancer.pick({0, 1}, {0: 3, 1: 3}, now=1.0 + HANDOFF_SETTLE) == 0  # tie: the lowest index
    assert balancer.pick({1}, {0: 0, 1: 9}, now=2 * HANDOFF_SETTLE) == 1  # only live workers
    assert balancer.pick(set(), {}, now=0.0) is None


# The run directory ------------------------------------------------------------------------


def test_a_name_is_held_by_one_worker_until_it_releases_it(tmp_path: Path):
    first, second, parent = LocalOwners(tmp_path, 0), LocalOwners(tmp_path, 1), LocalOwners(tmp_path)
    parent.create()
    assert first.claim("shop") == 0
    assert first.claim("shop") == 0  # again: still its own
    assert second.claim("shop") == 0  # refused: worker 0 holds it
    second.release("shop")  # not its to release
    assert parent.owner("shop") == 0
    assert second.claim("other") == 1
    assert parent.owned_counts() == Counter({0: 1, 1: 1})
    first.release("shop")
    assert second.claim("shop") == 1
    first.publish_info(WorkerInfo(11, 8001, 9001))
    second.publish_info(WorkerInfo(12, 8002, 9002))
    assert first.peers() == [WorkerInfo(12, 8002, 9002)]
    assert sorted(parent.release_worker(1)) == ["other", "shop"]  # worker 1 died
    assert parent.owned_counts() == Counter() and parent.info(1) is None and parent.info(0) is not None
    with pytest.raises(ValueError):
        first.claim("../escape")


def test_a_worker_releases_claims_that_never_became_streams_and_what_it_forgot(tmp_path: Path):
    LocalOwners(tmp_path).create()
    now = [0.0]
    serving: list[str] = []
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    link = WorkerLink(WorkerRole(0, tmp_path, ours.detach()), None, lambda: serving, None, lambda: None, lambda: now[0])  # type: ignore[arg-type]
    try:
        other = LocalOwners(tmp_path, 1)
        assert link.claim("live") is None and link.claim("never") is None
        assert other.claim("busy") == 1 and link.claim("busy") == 1
        serving.append("live")
        now[0] = OWNER_CLAIM_TTL / 2
        link.round()
        assert other.owner("never") == 0  # a publish being set up keeps its name
        now[0] = OWNER_CLAIM_TTL + 1
        link.round()
        assert other.owner("never") is None and other.owner("live") == 0
        serving.clear()
        link.round()
        assert other.owner("live") is None and other.owner("busy") == 1
    finally:
        link.channel.close()
        theirs.close()


def test_a_key_rotated_on_one_worker_holds_on_every_worker(tmp_path: Path):
    """The encoder's next connection may be handed to any worker: each one's authorizer must
    refuse the old key once the operator rotated it on another."""
    configured = {"shop": "old-key"}
    worker0 = PublishPolicy(AuthConfig(publish_keys=dict(configured)), SharedPublishKeys(tmp_path, dict(configured)))
    worker1 = PublishPolicy(AuthConfig(publish_keys=dict(configured)), SharedPublishKeys(tmp_path, dict(configured)))
    assert worker1.key_allows("shop", "old-key") and not worker1.key_allows("shop", "new-key")
    worker0.keys["shop"] = "new-key"  # what the admin API's rotate does on worker 0
    for policy in (worker0, worker1):
        assert policy.key_allows("shop", "new-key") and not policy.key_allows("shop", "old-key")
    worker1.keys["fresh"] = "k2"  # a name with no configured key gets one: shared too
    assert not worker0.shared_credentials(PublishAttempt("fresh", "k2", "rtmp", "1.2.3.4"))
    assert sorted(worker0.keys) == ["fresh", "shop"] and len(worker0.keys) == 2
    assert (tmp_path / "keys" / "shop").stat().st_mode & 0o077 == 0  # the key is the owner's alone
    with pytest.raises(KeyError):
        worker0.keys["../escape"] = "x"


def test_workers_sign_tokens_with_the_parents_secret_unless_one_is_configured(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(JWT_SECRET_ENV, "p" * 64)
    config = Config()
    take_jwt_secret(config)
    assert config.auth.jwt_secret == "p" * 64 and JWT_SECRET_ENV not in os.environ  # no subprocess inherits it
    monkeypatch.setenv(JWT_SECRET_ENV, "p" * 64)
    configured = Config(auth=AuthConfig(jwt_secret="c" * 32))
    take_jwt_secret(configured)
    assert configured.auth.jwt_secret == "c" * 32


# A real 2-worker server -------------------------------------------------------------------


async def _time_reloads(targets: list[tuple[str, int, int]]) -> list[float]:
    """blocking_reloads.py in a process of its own (no asyncio debug mode, which the test
    process runs in and which would delay whichever of two answers it handles second)."""
    args = [f"{name}:{owner}:{other}" for name, owner, other in targets]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "tests" / "blocking_reloads.py"),
        str(PARTS_TIMED),
        *args,
        env=serve_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-3000:]
    return sorted(json.loads(out))


async def _wake_buckets(session: aiohttp.ClientSession, admin_ports: list[int]) -> Counter[float]:
    """The owners' histogram (cumulative counts per upper bound, both workers summed) of the
    time from a part landing to the answer of a reload blocked on it."""
    buckets: Counter[float] = Counter()
    pattern = re.compile(r'mediacore_llhls_blocked_response_seconds_bucket\{kind="playlist",le="([^"]+)"\} (\S+)')
    for port in admin_ports:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
            for line in (await r.text()).splitlines():
                found = pattern.match(line)
                if found:
                    buckets[float(found[1])] += float(found[2])
    return buckets


def _p99_bound(before: Counter[float], after: Counter[float]) -> float:
    """The upper bound of the bucket holding the p99 of what was observed in between."""
    delta = {le: after[le] - before[le] for le in after}
    total = delta[float("inf")]
    assert total > 0
    return min(le for le, count in delta.items() if count >= 0.99 * total)


async def _metric(session: aiohttp.ClientSession, admin_port: int, name: str, labels: str = "") -> float:
    """One metric of a worker (its admin listener's /metrics): `labels` as exposed, e.g.
    '{kind="watch_start"}'; 0 for a labelled series not exposed yet."""
    async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as r:
        found = re.search(rf"^{re.escape(name + labels)} (\S+)$", await r.text(), re.MULTILINE)
    if found is None and labels:
        return 0.0
    assert found, name
    return float(found[1])


async def _republished(base: str, name: str, pusher: asyncio.subprocess.Process) -> bool:
    """Whether `name` is published a second time before `pusher` gives up (refused)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.get(f"{base}/api/streams") as r:
                stream = next(s for s in await r.json() if s["name"] == name)
            if stream["state"] == "live" and stream["publishes"] == 2:
                return True
            if pusher.returncode is not None:
                return False
            await asyncio.sleep(0.1)
    raise AssertionError(f"{name} was neither republished nor refused within 10 s")


async def _play_all(urls: list[str]) -> list[dict]:
    return list(await run_harness("play_many.mjs", str(PLAY_SECONDS), "30", *urls, timeout=PLAY_SECONDS + 90))


@pytest.mark.slow
async def test_two_workers_share_four_streams_hlsjs_plays_each_and_blocked_reloads_cross_workers(
    tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
):
    require_tool("node")
    http_port, rtmp_port, admin_port = free_port(), free_port(), free_port()
    monkeypatch.setattr("sys.stdin", io.StringIO("boss-password\n"))
    assert manage.main(["--data-dir", str(tmp_path / "data"), "add", "boss", "--role", "admin"]) == 0
    config = tmp_path / "mediacore.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n'
        '[plugins]\nenabled = ["accounts", "commerce", "chat", "audience"]\n'
    )
    log = tmp_path / "server.log"
    with log.open("wb") as err:
        server = await asyncio.create_subprocess_exec(
            *serve_command(config, "warning", workers=2),
            *["--host", "127.0.0.1", "--http-port", str(http_port), "--rtmp-port", str(rtmp_port)],
            *["--rtsp-port", str(free_port()), "--admin-port", str(admin_port)],
            cwd=str(ROOT),
            env=serve_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    pushers = []
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(server.stdout.readline(), SERVE_TIMEOUT)
        assert READY_LINE in line, log.read_text()[-3000:]
        found = re.search(rb"\(2 workers, (\S+)\)", line)
        assert found, line
        run_dir = Path(found[1].decode())
        names = [f"w{i}" for i in range(STREAMS)]
        for name in names:
            url = f"rtmp://127.0.0.1:{rtmp_port}/live/{name}"
            pushers.append(await start_process(*ffmpeg_push_cmd(clip, url, loop=True)))
        await asyncio.gather(*(wait_for_playlist(http_port, name, segments=2, timeout=30) for name in names))

        owners = LocalOwners(run_dir)
        owner = {name: owners.owner(name) for name in names}
        assert Counter(owner.values()) == Counter({0: 2, 1: 2}), owner  # both workers own streams
        infos = {i: owners.info(i) for i in (0, 1)}
        assert all(infos.values()), infos
        admin_ports = [admin_port, infos[1].admin_port]  # type: ignore[union-attr]
        targets = [(n, infos[owner[n]].http_port, infos[1 - owner[n]].http_port) for n in names]  # type: ignore[index,union-attr]
        rounds = []
        async with aiohttp.ClientSession() as session:
            for _ in range(TIMING_ROUNDS):
                before = await _wake_buckets(session, admin_ports)
                samples = await _time_reloads(targets)
                wake_p99 = _p99_bound(before, await _wake_buckets(session, admin_ports))
                hop_p99 = samples[int(0.99 * (len(samples) - 1))]
                rounds.append((hop_p99, wake_p99, samples[len(samples) // 2]))
                print(
                    f"blocked reload through the other worker: hop p99 {hop_p99 * 1000:.2f} ms, "
                    f"median {rounds[-1][2] * 1000:.2f} ms; the owner's own p99 <= {wake_p99 * 1000:g} ms"
                )
                if hop_p99 + wake_p99 <= ANSWERED_WITHIN:
                    break
        assert any(hop + wake <= ANSWERED_WITHIN for hop, wake, _ in rounds), rounds

        # The chat WebSocket of a stream, opened on the worker that does not own it, is the
        # owner's room, piped both ways (subprotocol negotiated end to end). The viewer signs
        # in with a guest token, which worker 0 issues: the stream's owner (worker 1) must
        # accept it, so every worker signs with one secret.
        name = next(n for n in names if owner[n] == 1)
        other = infos[0]
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{http_port}/api/guest") as r:
                assert r.status == 200
                token = (await r.json())["token"]
            for protocols in ((), (MSGPACK_PROTOCOL,)):
                url = f"ws://127.0.0.1:{other.http_port}/live/{name}/chat?access_token={token}"  # type: ignore[union-attr]
                async with session.ws_connect(url, protocols=protocols) as ws:
                    assert ws.protocol == (protocols[0] if protocols else None)
                    greeting = await ws.receive(timeout=5)
                    assert greeting.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), greeting
                    connections = [
                        await _metric(session, infos[i].admin_port, "mediacore_chat_connections")  # type: ignore[union-attr]
                        for i in (0, 1)
                    ]
                    assert connections[owner[name]] == 1 and connections[1 - owner[name]] == 0  # type: ignore[index]

        base = f"http://127.0.0.1:{http_port}"
        reports = await _play_all([f"{base}/watch/{name}?ll={ll}" for name in names for ll in (0, 1)])
        for report in reports:
            assert report.get("started"), report
            assert report["fatal"] is None, report
            assert report["framesDecoded"] > 0, report  # decoded frames grow while watched
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/api/streams") as r:
                listed = await r.json()
        assert sorted(s["name"] for s in listed) == names  # every worker's streams, from either

        # The audience plugin models the whole machine's audience: a viewer of a stream on
        # either worker is one watch event on the home worker (relayed by the stream's
        # owner through the parent), none on the other.
        async with aiohttp.ClientSession() as session:
            watch = '{kind="watch_start"}'
            home = await _metric(session, infos[0].admin_port, "mediacore_audience_events_total", watch)  # type: ignore[union-attr]
            other = await _metric(session, infos[1].admin_port, "mediacore_audience_events_total", watch)  # type: ignore[union-attr]
        assert other == 0 and home >= len(names), (home, other)

        # The shop is the machine's: worker 0 takes a product-card event for a stream worker 1
        # owns (it knows the machine's streams), and the stream's funnel, asked through the
        # owner, is the home worker's.
        theirs = next(n for n in names if owner[n] == 1)
        async with aiohttp.ClientSession(base_url=base) as session:
            async with session.post("/api/login", json={"username": "boss", "password": "boss-password"}) as r:
                assert r.status == 200
                admin = {"Authorization": f"Bearer {(await r.json())['token']}"}
            async with session.post("/api/products", json={"title": "Mug", "price": 1200}, headers=admin) as r:
                assert r.status == 201, await r.text()
                product = (await r.json())["id"]
            event = {"type": "impression", "stream": theirs, "product_id": product}
            async with session.post("/api/events", json=event, headers=admin) as r:
                assert r.status == 204, await r.text()
            async with session.get(f"/api/streams/{theirs}/stats", headers=admin) as r:
                assert r.status == 200, await r.text()
                stats = await r.json()
        assert [(p["product_id"], p["impressions"]) for p in stats["products"]] == [(product, 1)], stats

        # A plugin route naming no stream is answered by worker 0 wherever it arrives (the
        # watch pages above asked for guest tokens through both workers too).
        async with aiohttp.ClientSession() as session:

            async def issued() -> list[float]:
                return [
                    await _metric(session, infos[i].admin_port, "accounts_guest_tokens_total")  # type: ignore[union-attr]
                    for i in (0, 1)
                ]

            before = await issued()
            assert before[1] == 0
            async with session.post(f"http://127.0.0.1:{infos[1].http_port}/api/guest") as r:  # type: ignore[union-attr]
                assert r.status == 200 and (await r.json())["token"]
            assert await issued() == [before[0] + 1, 0]

        # A publisher that reconnects comes back to the worker holding its stream: refused once
        # at most by the other worker, which sends its next connection to the holder.
        name = names[0]
        await stop_process(pushers[0])
        attempts = 0
        while attempts < 3:
            attempts += 1
            url = f"rtmp://127.0.0.1:{rtmp_port}/live/{name}"
            pushers[0] = await start_process(*ffmpeg_push_cmd(clip, url, loop=True))
            if await _republished(base, name, pushers[0]):
                break
        assert attempts <= 2 and owners.owner(name) == owner[name]

        # A worker that dies is restarted, and the names it held are released.
        victim = owner[names[1]]
        dead = infos[victim]
        os.kill(dead.pid, signal.SIGKILL)  # type: ignore[union-attr]
        held = [n for n in names if owner[n] == victim]
        await until(
            lambda: (owners.info(victim) or dead).pid != dead.pid and all(owners.owner(n) is None for n in held),  # type: ignore[union-attr]
            20,
            "the dead worker's restart and the release of its names",
        )
    finally:
        for p in pushers:
            await stop_process(p)
        await stop_process(server, timeout=30)
    assert server.returncode == 0, log.read_text()[-3000:]
    assert not run_dir.exists()


# The loopback proxy -------------------------------------------------------------------------


async def test_the_proxy_streams_large_bodies_keeps_status_and_headers_and_answers_502_for_a_dead_worker():
    big = bytes(range(256)) * (BUFFER_UP_TO // 128)  # twice the buffered size, sent chunked

    async def upstream(request: web.Request) -> web.StreamResponse:
        assert request.headers[HOP_HEADER] == "1" and request.headers["X-Forwarded-For"] == "127.0.0.1"
        response = web.StreamResponse(status=203, headers={"X-Kept": request.query["q"]})
        await response.prepare(request)
        for i in range(0, len(big), 65536):
            await response.write(big[i : i + 65536])
        await response.write_eof()
        return response

    owner_app = web.Application()
    owner_app.router.add_get("/live/x/big", upstream)
    async with TestServer(owner_app) as owner:
        routes = WorkerRoutes(lambda name: None, lambda: None, list)
        dead = free_port()

        async def front_handler(request: web.Request) -> web.StreamResponse:
            base = str(owner.make_url("/")) if request.query.get("q") != "dead" else f"http://127.0.0.1:{dead}"
            return await forward(request, base, routes)

        front_app = web.Application()
        front_app.router.add_get("/live/x/big", front_handler)
        async with TestServer(front_app) as front, aiohttp.ClientSession() as session:
            async with session.get(front.make_url("/live/x/big?q=kept")) as r:
                assert r.status == 203 and r.headers["X-Kept"] == "kept"
                assert await r.read() == big
            async with session.get(front.make_url("/live/x/big?q=dead")) as r:
                assert r.status == 502
        await routes.close()
