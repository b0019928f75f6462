"""Hostile and unlucky requests at an edge node: negative-cache poisoning, cache busting by
directive spelling, and floods of blocked playlist requests.

The first half runs an LL-HLS origin in miniature (one rendition whose parts the test
publishes one at a time) behind an edge on a FakeClock, so every window is exact and quick.
Clients are told apart by their address: each one connects from its own loopback address
(127.0.0.2, 127.0.0.3, ...).

The second half (slow) puts an edge in front of a real origin fed by ffmpeg, beside a
healthy stream that checks itself (tests/hostile.py): the stream under attack is the healthy
stream's own LL-HLS rendition.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from conftest import until
from hostile import HealthyStream
from test_edge import ask_for_the_part_after_the_hint, origin_count
from test_edge_stale import FakeClock

from edge.config import EdgeConfig
from edge.server import EdgeNode, run_edge
from mediacore.app.engine import Engine
from mediacore.model.media import Kind
from mediacore.playlist.uris import parse_ll_media
from mediacore.store.ll import LlRendition

SESSION = "abc"
PLAYLIST = "/live/s/ll/video.m3u8"
TD = 2
GAP = (5, 1)
"""A part listed GAP=YES: in the past, never served."""


def part_path(msn: int, part: int) -> str:
    return f"/live/s/ll/v-{SESSION}-{msn}.{part}.m4s"


def part_bytes(msn: int, part: int) -> bytes:
    return f"part {msn}.{part}".encode() * 100


class LlUpstream:
    """One LL-HLS rendition in parent 5: parts 5.0-5.2 published, the hint at 5.3. Blocking
    playlist requests wait until their part is published (503 when the upstream stops), parts
    not published yet are 404 with max-age=TD, as the origin answers them."""

    def __init__(self) -> None:
        self.msn = 5
        self.parts = 3
        self.requests: Counter[str] = Counter()
        self.queries: list[str] = []  # raw query of every playlist request, in arrival order
        self.url = ""
        self.closing = False
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def publish(self, parts: int = 1) -> None:
        self.parts += parts
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def has(self, msn: int, part: int) -> bool:
        return (msn, part) < (self.msn, self.parts)

    def playlist(self, skip: bool) -> str:
        lines = ["#EXTM3U", f"#EXT-X-TARGETDURATION:{TD}", "#EXT-X-PART-INF:PART-TARGET=0.220"]
        if skip:
            lines.append("#EXT-X-SKIP:SKIPPED-SEGMENTS=0")
        for part in range(self.parts):
            gap = ",GAP=YES" if (self.msn, part) == GAP else ""
            lines.append(f'#EXT-X-PART:DURATION=0.20000,URI="{part_path(self.msn, part).rsplit("/", 1)[1]}"{gap}')
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="v-{SESSION}-{self.msn}.{self.parts}.m4s"')
        return "\n".join(lines) + "\n"

    async def serve(self, request: web.Request) -> web.Response:
        self.requests[request.path] += 1
        if request.path == PLAYLIST:
            self.queries.append(request.query_string)
            msn, part = request.query.get("_HLS_msn"), request.query.get("_HLS_part", "0")
            if msn is not None:
                if not msn.isdigit() or not part.isdigit():
                    return web.Response(status=400, text="bad directive", headers={"Cache-Control": f"max-age={TD}"})
                while not self.has(int(msn), int(part)):
                    if self.closing:
                        return web.Response(status=503, headers={"Cache-Control": f"max-age={TD}"})
                    await self._changed.wait()
            cache = f"public, max-age={6 * TD}" if msn is not None else "public, max-age=1"
            skip = request.query.get("_HLS_skip") in ("YES", "v2")
            return web.Response(
                text=self.playlist(skip), content_type="application/vnd.apple.mpegurl", headers={"Cache-Control": cache}
            )
        name = parse_ll_media(request.path.rsplit("/", 1)[1].removesuffix(".m4s"))
        if name is not None and name.part is not None and self.has(name.msn, name.part) and name.part != GAP[1]:
            return web.Response(
                body=part_bytes(name.msn, name.part),
                content_type="video/mp4",
                headers={"Cache-Control": "public, max-age=3600, immutable"},
            )
        return web.Response(status=404, text="no such part or segment", headers={"Cache-Control": f"max-age={TD}"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.serve)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        self.closing = True  # requests still blocked answer 503
        self._wake()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def cache(self) -> str:
        return self.headers.get("X-Cache", "")


@dataclass
class Rig:
    clock: FakeClock
    upstream: LlUpstream
    node: EdgeNode
    edge: str
    sessions: dict[str, aiohttp.ClientSession] = field(default_factory=dict)

    def client(self, address: str) -> Callable[..., Awaitable[Reply]]:
        """A viewer connecting from its own loopback address."""
        if address not in self.sessions:
            connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=0)
            self.sessions[address] = aiohttp.ClientSession(connector=connector)
        session = self.sessions[address]

        async def get(path: str, headers: dict[str, str] | None = None) -> Reply:
            async with session.get(self.edge + path, headers=headers) as r:
                return Reply(r.status, dict(r.headers), await r.read())

        return get

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.node.registry.get_sample_value(name, labels or {}) or 0.0


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig() -> AsyncIterator[RigFactory]:
    """`await make_rig(**edge_settings)`: the miniature origin with an edge in front of it."""
    made: list[tuple[Rig, web.AppRunner]] = []

    async def make(**settings: object) -> Rig:
        upstream = LlUpstream()
        await upstream.start()
        clock = FakeClock()
        config = EdgeConfig(upstreams=[upstream.url], cache_mb=8, **settings)  # type: ignore[arg-type]
        node = EdgeNode(config, clock=clock)
        runner, port = await run_edge(config, "127.0.0.1", 0, node)
        rig = Rig(clock, upstream, node, f"http://127.0.0.1:{port}")
        made.append((rig, runner))
        return rig

    try:
        yield make
    finally:
        for rig, runner in made:
            await rig.upstream.stop()
            for session in rig.sessions.values():
                await session.close()
            await runner.cleanup()


@pytest.fixture
async def rig(make_rig: RigFactory) -> Rig:
    return await make_rig()


# Negative caching ------------------------------------------------------------------------


async def test_a_404_for_the_part_after_the_hint_does_not_poison_it(rig: Rig):
    early, other = rig.client("127.0.0.2"), rig.client("127.0.0.3")
    listing = await early(PLAYLIST)
    assert b'PRELOAD-HINT:TYPE=PART,URI="v-abc-5.3.m4s"' in listing.body
    ahead = await early(part_path(5, 4))  # one past the hint: not published yet
    assert (ahead.status, ahead.cache, ahead.headers["Cache-Control"]) == (404, "MISS", "no-store")
    rig.upstream.publish(2)  # 5.3 and 5.4 arrive, well within negative_ttl (1 s) and the media bound
    rig.clock.advance(0.05)
    real = await other(part_path(5, 4))
    assert (real.status, real.cache, real.body) == (200, "MISS", part_bytes(5, 4))
    assert rig.upstream.requests[part_path(5, 4)] == 2
    assert rig.metric("mediacore_edge_future_404_total") == 1


async def test_a_404_for_a_part_of_an_unseen_playlist_is_not_stored_either(rig: Rig):
    early, other = rig.client("127.0.0.2"), rig.client("127.0.0.3")
    ahead = await early(part_path(5, 4))  # this edge has no playlist of the rendition: maybe future
    assert (ahead.status, ahead.headers["Cache-Control"]) == (404, "no-store")
    rig.upstream.publish(2)
    rig.clock.advance(0.05)
    assert (await other(part_path(5, 4))).status == 200


async def test_a_404_for_a_past_part_is_kept_under_a_part_target(rig: Rig):
    viewer = rig.client("127.0.0.2")
    await viewer(PLAYLIST)  # hint 5.3: the GAP part 5.1 is behind it and never will be served
    gap = part_path(*GAP)
    first = await viewer(gap)
    assert (first.status, first.cache, first.headers["Cache-Control"]) == (404, "MISS", f"max-age={TD}")
    rig.clock.advance(0.19)
    assert (await viewer(gap)).cache == "HIT"
    rig.clock.advance(0.01)  # media_negative_ttl (0.2 s) reached, long before negative_ttl (1 s)
    again = await viewer(gap)
    assert (again.status, again.cache) == (404, "MISS")
    assert rig.upstream.requests[gap] == 2


# Canonical keys --------------------------------------------------------------------------


async def wait_for_misses(rig: Rig, n: int) -> None:
    """Until the edge has taken `n` misses (the requests are all inside it)."""
    await until(lambda: rig.metric("mediacore_edge_misses_total") >= n, 5, f"{n} misses at the edge", 0.01)


async def test_leading_zeros_share_one_upstream_fetch(rig: Rig):
    a, b = rig.client("127.0.0.2"), rig.client("127.0.0.3")
    padded = asyncio.create_task(a(PLAYLIST + "?_HLS_msn=005&_HLS_part=03"))
    plain = asyncio.create_task(b(PLAYLIST + "?_HLS_msn=5&_HLS_part=3"))
    await wait_for_misses(rig, 2)  # both blocked at the edge on the next part
    rig.upstream.publish()
    replies = [await padded, await plain]
    assert [r.status for r in replies] == [200, 200] and replies[0].body == replies[1].body
    assert rig.upstream.queries == ["_HLS_msn=5&_HLS_part=3"]  # one fetch, canonical spelling


async def test_an_unknown_skip_is_not_forwarded_and_shares_the_key_of_no_skip(rig: Rig):
    a, b = rig.client("127.0.0.2"), rig.client("127.0.0.3")
    odd = asyncio.create_task(a(PLAYLIST + "?_HLS_msn=5&_HLS_part=3&_HLS_skip=x"))
    plain = asyncio.create_task(b(PLAYLIST + "?_HLS_msn=5&_HLS_part=3"))
    await wait_for_misses(rig, 2)
    rig.upstream.publish()
    replies = [await odd, await plain]
    assert [r.status for r in replies] == [200, 200] and replies[0].body == replies[1].body
    assert b"EXT-X-SKIP" not in replies[0].body
    assert rig.upstream.queries == ["_HLS_msn=5&_HLS_part=3"]
    delta = await a(PLAYLIST + "?_HLS_msn=05&_HLS_part=3&_HLS_skip=YES")  # a skip the origin acts on
    assert delta.status == 200 and b"EXT-X-SKIP" in delta.body
    assert rig.upstream.queries[-1] == "_HLS_msn=5&_HLS_part=3&_HLS_skip=YES"


async def test_malformed_directives_are_refused_at_the_edge(rig: Rig):
    viewer = rig.client("127.0.0.2")
    queries = ["_HLS_msn=abc", "_HLS_msn=-1", "_HLS_msn=5&_HLS_part=x", "_HLS_msn=", "_HLS_msn=%2B5", "_HLS_part=3"]
    for query in queries:
        refused = await viewer(f"{PLAYLIST}?{query}")
        assert refused.status == 400, query
    assert rig.upstream.queries == []  # nothing went upstream
    assert rig.metric("mediacore_edge_refused_total", {"reason": "bad_directive"}) == len(queries)


# Blocked-request bounds ------------------------------------------------------------------


async def test_blocked_requests_past_the_per_client_cap_get_429(rig: Rig):
    hostile, viewer = rig.client("127.0.0.2"), rig.client("127.0.0.3")
    flood = [  # 20 distinct parts ahead, each with a made-up X-Forwarded-For (not trusted: ignored)
        asyncio.create_task(
            hostile(f"{PLAYLIST}?_HLS_msn=6&_HLS_part={k}", headers={"X-Forwarded-For": f"198.51.100.{k}"})
        )
        for k in range(20)
    ]
    await until(lambda: sum(t.done() for t in flood) >= 12, 5, "12 refusals")
    refused = [t.result() for t in flood if t.done()]
    assert [r.status for r in refused] == [429] * 12
    assert {r.headers["Retry-After"] for r in refused} == {"1"}
    # The admitted 8 (the cap: max_blocked_per_client) may reach the upstream after the refusals.
    await until(lambda: len(rig.upstream.queries) >= 8, 5, "the admitted requests upstream")
    assert len(rig.upstream.queries) == 8
    served = asyncio.create_task(viewer(f"{PLAYLIST}?_HLS_msn=5&_HLS_part=3"))  # another client, blocked too
    await until(lambda: len(rig.upstream.queries) == 9, 5, "the other client's request upstream")
    rig.upstream.publish()
    assert (await served).status == 200
    assert rig.metric("mediacore_edge_refused_total", {"reason": "blocked_per_client"}) == 12
    held = [t for t in flood if not t.done()]
    assert len(held) == 8  # still blocked upstream, until the upstream stops
    await rig.upstream.stop()
    assert {(await t).status for t in held} == {502}


async def test_a_trusted_proxy_names_its_clients(make_rig: RigFactory):
    rig = await make_rig(trusted_proxies=["127.0.0.2"])
    proxy = rig.client("127.0.0.2")
    many = [  # 20 viewers behind the proxy, one blocked request each: none refused
        asyncio.create_task(proxy(f"{PLAYLIST}?_HLS_msn=6&_HLS_part={k}", headers={"X-Forwarded-For": f"10.0.0.{k}"}))
        for k in range(20)
    ]
    one = [  # one viewer behind it asking 10 parts: refused past the cap like any client
        asyncio.create_task(proxy(f"{PLAYLIST}?_HLS_msn=7&_HLS_part={k}", headers={"X-Forwarded-For": "10.0.1.1"}))
        for k in range(10)
    ]
    await until(lambda: sum(t.done() for t in one) >= 2, 5, "2 refusals")
    assert [t.result().status for t in one if t.done()] == [429, 429]
    await until(lambda: len(rig.upstream.queries) >= 28, 5, "the admitted requests upstream")
    assert not any(t.done() for t in many) and len(rig.upstream.queries) == 28
    own = asyncio.create_task(proxy(f"{PLAYLIST}?_HLS_msn=8&_HLS_part=0"))  # the proxy for itself: no one client
    await until(lambda: len(rig.upstream.queries) == 29, 5, "the proxy's own request upstream")
    await rig.upstream.stop()
    await asyncio.gather(*many, *one, own)


async def test_blocked_fetches_are_bounded_in_total_and_media_still_flows(make_rig: RigFactory):
    rig = await make_rig(max_blocked_upstream=4)
    clients = [rig.client(f"127.0.0.{i}") for i in range(2, 8)]
    blocked = [asyncio.create_task(c(f"{PLAYLIST}?_HLS_msn=6&_HLS_part={i}")) for i, c in enumerate(clients)]
    await until(lambda: sum(t.done() for t in blocked) >= 2, 5, "2 refusals")
    refused = [t.result() for t in blocked if t.done()]
    assert [r.status for r in refused] == [503, 503] and {r.headers["Retry-After"] for r in refused} == {"1"}
    await until(lambda: len(rig.upstream.queries) >= 4, 5, "the admitted requests upstream")
    assert len(rig.upstream.queries) == 4
    late = rig.client("127.0.0.9")
    media = await late(part_path(5, 0))  # segments and parts still get a connection
    assert media.status == 200
    in_flight = next(i for i, t in enumerate(blocked) if not t.done())
    joining = asyncio.create_task(late(f"{PLAYLIST}?_HLS_msn=6&_HLS_part={in_flight}"))  # no new fetch: admitted
    await wait_for_misses(rig, 6)  # 4 admitted, the part, and the one joining
    assert not joining.done() and len(rig.upstream.queries) == 4
    assert rig.metric("mediacore_edge_refused_total", {"reason": "blocked_upstream"}) == 2
    await rig.upstream.stop()
    await asyncio.gather(*blocked, joining)


# Against the real origin -----------------------------------------------------------------

LL_PLAYLIST_ROUTE = "/live/{stream}/ll/{rendition}.m3u8"


@pytest.fixture
async def edge(engine: Engine) -> AsyncIterator[tuple[EdgeNode, str]]:
    config = EdgeConfig(upstreams=[f"http://127.0.0.1:{engine.http_port}"], cache_mb=64)
    node = EdgeNode(config)
    runner, port = await run_edge(config, "127.0.0.1", 0, node)
    try:
        yield node, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def live_video(engine: Engine, name: str) -> LlRendition:
    def ready() -> bool:
        renditions = engine.ll_renditions.get(name)
        return bool(renditions and renditions[Kind.VIDEO].ready)

    await until(ready, 20, "the LL-HLS video rendition")
    return engine.ll_renditions[name][Kind.VIDEO]


def session_from(address: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0), limit=0))


@pytest.mark.slow
async def test_real_origin_a_404_after_the_hint_does_not_poison_the_next_part(engine, healthy_clip, edge):
    _, base = edge
    async with HealthyStream(engine, healthy_clip) as healthy:
        video = await live_video(engine, healthy.name)
        async with session_from("127.0.0.2") as early, session_from("127.0.0.3") as other:
            after, told = await ask_for_the_part_after_the_hint(early, f"{base}/live/{healthy.name}/ll")
            await until(lambda: video.resource(after, 0.0) is not None, 5, f"part {after}", 0.01)
            async with other.get(f"{base}/live/{healthy.name}/ll/{after}") as r:
                assert r.status == 200, (r.status, r.headers.get("X-Cache"))  # was: a cached 404 for 1 s
                assert await r.read() == video.resource(after, 0.0)
            assert told == "no-store"  # nor may a browser or a cache after this edge keep it
        await healthy.check()


@pytest.mark.slow
async def test_real_origin_directive_spellings_share_one_fetch(engine, healthy_clip, edge):
    _, base = edge
    async with HealthyStream(engine, healthy_clip) as healthy:
        video = await live_video(engine, healthy.name)
        playlist = f"{base}/live/{healthy.name}/ll/video.m3u8"
        msn, part = video.next_part()  # not published yet: every spelling blocks on it
        spellings = [
            f"_HLS_msn={msn}&_HLS_part={part}",
            f"_HLS_msn=00{msn}&_HLS_part=0{part}",
            f"_HLS_msn={msn}&_HLS_part={part}&_HLS_skip=x",
        ]
        before = origin_count(engine, LL_PLAYLIST_ROUTE)
        async with session_from("127.0.0.2") as a, session_from("127.0.0.3") as b, session_from("127.0.0.4") as c:

            async def ask(session: aiohttp.ClientSession, query: str) -> tuple[int, str]:
                async with session.get(f"{playlist}?{query}") as r:
                    return r.status, await r.text()

            replies = await asyncio.gather(*(ask(s, q) for s, q in zip((a, b, c), spellings, strict=True)))
        assert [status for status, _ in replies] == [200, 200, 200]
        assert len({text for _, text in replies}) == 1 and "EXT-X-SKIP" not in replies[0][1]
        assert origin_count(engine, LL_PLAYLIST_ROUTE) - before == 1
        await healthy.check()


@pytest.mark.slow
async def test_real_origin_a_flood_of_blocked_parts_from_one_client(engine, healthy_clip, edge):
    node, base = edge
    async with HealthyStream(engine, healthy_clip) as healthy:
        video = await live_video(engine, healthy.name)
        playlist = f"{base}/live/{healthy.name}/ll/video.m3u8"
        last_msn, _ = video.last_part()
        upstream_before = node.registry.get_sample_value("mediacore_edge_upstream_requests_total") or 0.0
        async with session_from("127.0.0.2") as hostile, session_from("127.0.0.3") as viewer:

            async def ask(session: aiohttp.ClientSession, query: str) -> tuple[int, str]:
                async with session.get(f"{playlist}?{query}") as r:
                    await r.read()
                    return r.status, r.headers.get("Retry-After", "")

            flood = [asyncio.create_task(ask(hostile, f"_HLS_msn={last_msn + 1}&_HLS_part={k}")) for k in range(20)]

            def answered(status: int) -> list[tuple[int, str]]:
                return [t.result() for t in flood if t.done() and t.result()[0] == status]

            # The refusals come back at once; an admitted request may also be answered by
            # then (its part published), which is not a refusal: count the 429s only.
            await until(lambda: len(answered(429)) >= 12, 5, "12 refusals")
            assert answered(429) == [(429, "1")] * 12
            msn, part = video.next_part()  # another client blocks too (a delta update: never a key of the flood)
            assert (await ask(viewer, f"_HLS_msn={msn}&_HLS_part={part}&_HLS_skip=YES"))[0] == 200
            results = await asyncio.gather(*flood)
        assert sum(status == 429 for status, _ in results) == 12
        upstream = (node.registry.get_sample_value("mediacore_edge_upstream_requests_total") or 0.0) - upstream_before
        assert upstream == 9  # the 8 admitted parts and the other client's
        refusals = node.registry.get_sample_value("mediacore_edge_refused_total", {"reason": "blocked_per_client"})
        assert refusals == 12
        await healthy.check()
