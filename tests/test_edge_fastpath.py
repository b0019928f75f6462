"""The edge's fast path: which reads it answers itself (sans-I/O, fuzzed), and over real sockets
that its answers are the aiohttp app's answers byte for byte but Date, and that anything else
on a connection is the app's."""

from __future__ import annotations

import asyncio
import gc
import gzip

import httptools
import pytest
import test_abuse_edge as abuse
import test_edge_stale
from conftest import until
from hypothesis import given, settings
from hypothesis import strategies as st
from test_edge_stale import MISSING, PLAYLIST, SEGMENT, SEGMENT_BYTES, Rig

from edge.fastpath import FRAMED_READ_BYTES, MAX_FAST_READ, MAX_PIPELINED, Head, _framed, frame, frame_afresh

rig = test_edge_stale.rig
"""The stale tests' edge: a miniature upstream and a clock that moves only when told."""
make_rig = abuse.make_rig
"""An edge in front of a miniature LL-HLS origin whose next part the test publishes."""


def get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/{version}", "Host: edge", *headers, "", ""]).encode()


def test_complete_plain_gets_and_heads_are_framed():
    read = get("/live/s/a.ts") + get("/live/s/index.m3u8", "Accept-Encoding: gzip", method="HEAD")
    assert frame(read) == [
        Head(b"GET", "/live/s/a.ts", "", True),
        Head(b"HEAD", "/live/s/index.m3u8", "gzip", True),
    ]
    assert frame(get("/a", "Content-Length: 0")) == [Head(b"GET", "/a", "", True)]
    assert frame(get("/a", version="1.0")) == [Head(b"GET", "/a", "", False, b"Connection: close\r\n")]
    keep = Head(b"GET", "/a", "", True, b"Connection: keep-alive\r\n")
    assert frame(get("/a", "Connection: keep-alive", version="1.0")) == [keep]
    assert frame(get("/a", "Connection: close")) == [Head(b"GET", "/a", "", False, b"Connection: close\r\n")]
    blocking = get(
        "/live/s/ll.m3u8?_HLS_msn=7&_HLS_part=02&_HLS_skip=YES",
        "X-Forwarded-For: 10.0.0.1",
        "X-Forwarded-For: 10.0.0.2",
    )
    assert frame(blocking) == [
        Head(b"GET", "/live/s/ll.m3u8", "", True, b"", "_HLS_msn=7&_HLS_part=02&_HLS_skip=YES", "10.0.0.1, 10.0.0.2")
    ]


def test_framing_a_read_leaves_no_cyclic_garbage():
    """Every read is framed (thousands a second per worker): its parser and callbacks must go
    by reference counting, not wait for the cyclic collector."""
    reads = [get("/live/s/index.m3u8"), get("/live/s/ll.m3u8?_HLS_msn=7&_HLS_part=2"), b"POST /x HTTP/1.1\r\n"]
    gc.collect()
    gc.disable()
    try:
        for _ in range(1000):
            for read in reads:
                frame_afresh(read)  # frame() would parse each of them once and remember it
        assert gc.collect() < 100  # 3,000 reads left about 30,000 objects in cycles before the cut
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "read",
    [
        get("/live/s/index.m3u8?_HLS_msn=5&token=t"),  # a query of more than directives: a token
        get("/live/s/index.m3u8?v=1"),
        get("/live/s/index.m3u8?_HLS_msn=%35"),  # an escaped directive: the app decodes it
        get("/live/s/index.m3u8?_HLS_msn=5&"),
        get("/live/s/index.m3u8?"),
        get("/live/s/index.m3u8?_HLS_msn=5") + get("/a"),  # directives come one request per read
        get("/live/s/a%2Fb.ts"),  # escapes: aiohttp routes on the decoded path
        get("/live/s/../t/a.ts"),
        get("/live/s//a.ts"),
        get("/live/s/."),
        get("http://edge/live/s/a.ts"),  # absolute form
        get("/a", method="POST"),
        get("/a", method="OPTIONS"),
        get("/a", "Content-Length: 3") + b"abc",
        get("/a", "Transfer-Encoding: chunked") + b"0\r\n\r\n",
        get("/a", "Expect: 100-continue"),
        get("/a", "Connection: Upgrade", "Upgrade: websocket"),
        get("/a")[:-2],  # incomplete head
        get("/a") + get("/b")[:10],  # a complete request, then part of the next
        get("/a") * (MAX_PIPELINED + 1),  # a long pipeline: the app answers one at a time
        get("/a") + get("/b?x=1"),  # one of two is not the fast path's: neither is answered here
        get("/a", "Connection: close") + get("/b"),  # a request after the connection's last
        get("/a", "X-Long: " + "x" * MAX_FAST_READ),  # aiohttp's size limits decide
        b"GET /a HTTP/1.1\r\nHost edge\r\n\r\n",  # malformed: aiohttp answers 400
        b"",
    ],
)
def test_anything_else_goes_to_aiohttp(read: bytes):
    assert frame(read) is None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_read_is_framed_or_handed_over(read: bytes):
    heads = frame(read)
    assert heads is None or all(h.method in (b"GET", b"HEAD") and h.path.startswith("/") for h in heads)
    assert frame(read) == heads == frame_afresh(read)  # remembered or parsed again: the same


def test_a_remembered_framing_is_the_parse_of_those_bytes_and_a_copy():
    read = get("/live/s/ll.m3u8?_HLS_msn=7&_HLS_part=2")
    first = frame(read)
    assert read in _framed and first == frame_afresh(read)
    assert first is not None
    first.clear()  # a caller's list is its own
    assert frame(read) == frame_afresh(read) != []
    long = get("/live/s/index.m3u8", "X-Pad: " + "x" * FRAMED_READ_BYTES)
    assert frame(long) == frame_afresh(long) and long not in _framed  # long reads are not kept


PATHS = st.from_regex(r"/[a-z0-9._-]{1,20}(/[a-z0-9._-]{1,20}){0,3}", fullmatch=True).filter(
    lambda p: "/./" not in p + "/" and "/../" not in p + "/"
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(PATHS, st.sampled_from(["GET", "HEAD"])), min_size=1, max_size=MAX_PIPELINED), st.data())
def test_a_pipeline_is_framed_whole_and_never_cut(requests: list[tuple[str, str]], data: st.DataObject):
    read = b"".join(get(path, method=method) for path, method in requests)
    assert frame(read) == [Head(method.encode(), path, "", True) for path, method in requests]
    cut = data.draw(st.integers(1, len(read) - 1))
    prefix = frame(read[:cut])  # a read ending inside a request is never answered here
    assert prefix is None or read[:cut].endswith(b"\r\n\r\n")


async def exchange(port: int, request: bytes, responses: int) -> list[tuple[int, dict, bytes]]:
    """Send `request` (one read) and parse `responses` responses."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    out: list[tuple[int, dict, bytes]] = []

    class Collector:
        def __init__(self) -> None:
            self.headers: dict[str, str] = {}
            self.body = b""

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers[name.decode().lower()] = value.decode()

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            out.append((parser.get_status_code(), self.headers, self.body))
            self.headers, self.body = {}, b""

    parser = httptools.HttpResponseParser(Collector())
    try:
        while len(out) < responses:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk, f"closed after {len(out)} responses"
            parser.feed_data(chunk)
    finally:
        writer.close()
    return out


def port_of(rig: Rig) -> int:
    return int(rig.edge.rsplit(":", 1)[1])


async def test_a_hit_is_the_apps_answer_byte_for_byte_but_date(rig: Rig):
    assert (await rig.get(SEGMENT)).cache == "MISS"
    assert (await rig.get(PLAYLIST)).cache == "MISS"
    hits = rig.node.registry.get_sample_value("mediacore_edge_hits_total")
    for path, accept in ((SEGMENT, "identity"), (PLAYLIST, "identity"), (PLAYLIST, "gzip")):
        (fast,) = await exchange(port_of(rig), get(path, f"Accept-Encoding: {accept}"), 1)
        (app,) = await exchange(port_of(rig), get(path + "?v=1", f"Accept-Encoding: {accept}"), 1)  # a query: the app
        drop = {"date", "server"}
        assert fast[0] == app[0] == 200 and fast[2] == app[2]
        assert {k: v for k, v in fast[1].items() if k not in drop} == {k: v for k, v in app[1].items() if k not in drop}
        assert fast[1]["x-cache"] == "HIT" and "date" in fast[1]
    assert rig.node.registry.get_sample_value("mediacore_edge_hits_total") == hits + 6
    zipped, plain = fast[2], (await exchange(port_of(rig), get(PLAYLIST), 1))[0][2]
    assert gzip.decompress(zipped) == plain and plain.startswith(b"#EXTM3U")


async def test_keep_alive_pipelines_head_and_close(rig: Rig):
    await rig.get(SEGMENT)
    answers = await exchange(port_of(rig), get(SEGMENT) * 3, 3)
    assert [(status, body) for status, _, body in answers] == [(200, SEGMENT_BYTES)] * 3
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(rig))
    writer.write(get(SEGMENT, method="HEAD") * 2)
    heads = [await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) for _ in range(2)]
    with pytest.raises(TimeoutError):  # no body after either head
        await asyncio.wait_for(reader.read(1), 0.3)
    writer.close()
    for head in heads:
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and f"Content-Length: {len(SEGMENT_BYTES)}\r\n".encode() in head
    # A hit then a miss in one read: both answered, in order, by the app (the hit was not sent first).
    first, second = await exchange(port_of(rig), get(SEGMENT) + get(MISSING), 2)
    assert (first[0], first[2], second[0]) == (200, SEGMENT_BYTES, 404)
    # Connection: close is honoured: the answer, then the end of the stream.
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(rig))
    writer.write(get(SEGMENT, "Connection: close"))
    data = await asyncio.wait_for(reader.read(), 5)  # returns at EOF only
    writer.close()
    assert data.endswith(SEGMENT_BYTES) and b"Connection: close" in data


# Blocked LL-HLS reloads parked on the fast path ---------------------------------------------

BLOCKING = abuse.PLAYLIST + "?_HLS_msn=5&_HLS_part=3"
"""The next part of the miniature LL-HLS origin: held there until the test publishes it."""
DROP = {"date", "server"}


def without(headers: dict) -> dict:
    return {k: v for k, v in headers.items() if k not in DROP}


async def test_parked_reloads_get_the_apps_bytes_from_one_fetch_and_one_render(make_rig: abuse.RigFactory):
    rig = await make_rig()
    port = int(rig.edge.rsplit(":", 1)[1])
    renders = 0
    answer = rig.node.answer

    def counted(*args: object) -> tuple[dict[str, str], bytes]:
        nonlocal renders
        renders += 1
        return answer(*args)  # type: ignore[arg-type]

    rig.node.answer = counted  # type: ignore[method-assign]
    accepts = ["Accept-Encoding: gzip", "Accept-Encoding: identity"]
    fast = [asyncio.create_task(exchange(port, get(BLOCKING, accepts[i % 2]), 1)) for i in range(20)]
    head_reader, head_writer = await asyncio.open_connection("127.0.0.1", port)
    head_writer.write(get(BLOCKING, accepts[0], method="HEAD"))
    app = [asyncio.create_task(exchange(port, get(BLOCKING + "&v=1", a), 1)) for a in accepts]  # not directives only
    await abuse.wait_for_misses(rig, 23)
    assert rig.node.blocked.requests == 23 and len(rig.upstream.queries) == 1
    rig.upstream.publish()
    answers = [(await t)[0] for t in fast]
    app_answers = [(await t)[0] for t in app]
    for i, (status, headers, body) in enumerate(answers):
        app_status, app_headers, app_body = app_answers[i % 2]
        assert (status, without(headers), body) == (app_status, without(app_headers), app_body) and status == 200
    assert answers[0][1]["content-encoding"] == "gzip" and gzip.decompress(answers[0][2]) == answers[1][2]
    assert b"v-abc-5.3.m4s" in answers[1][2] and answers[1][1]["x-cache"] == "MISS"
    head = (await asyncio.wait_for(head_reader.readuntil(b"\r\n\r\n"), 5)).decode()
    head_writer.close()
    lines = dict(line.split(": ", 1) for line in head.strip().splitlines()[1:])
    assert head.startswith("HTTP/1.1 200 OK\r\n") and without({k.lower(): v for k, v in lines.items()}) == without(
        answers[0][1]
    )
    assert renders == 2 + 2  # the fast path: one per Accept-Encoding; the app: one per response
    assert len(rig.upstream.queries) == 1 and rig.node.blocked.requests == 0
    assert rig.metric("mediacore_edge_misses_total") == 23 and rig.metric("mediacore_edge_hits_total") == 0
    again = await exchange(port, get(BLOCKING, accepts[1]), 1)  # now a fresh hit: at once
    assert again[0][2] == answers[1][2] and again[0][1]["x-cache"] == "HIT"


async def test_parked_reloads_fail_as_the_app_fails_them(make_rig: abuse.RigFactory):
    rig = await make_rig()
    port = int(rig.edge.rsplit(":", 1)[1])
    fast = [asyncio.create_task(exchange(port, get(BLOCKING), 1)) for _ in range(3)]
    app = asyncio.create_task(exchange(port, get(BLOCKING + "&v=1"), 1))
    await abuse.wait_for_misses(rig, 4)
    await rig.upstream.stop()  # the held request answers 503: the edge's 502, no stale copy
    (app_status, app_headers, app_body) = (await app)[0]
    assert app_status == 502 and b"upstream unavailable" in app_body
    for task in fast:
        (status, headers, body) = (await task)[0]
        assert (status, without(headers), body) == (app_status, without(app_headers), app_body)
    assert rig.node.blocked.requests == 0


async def test_a_parked_connection_that_goes_away_releases_its_admission(make_rig: abuse.RigFactory):
    rig = await make_rig()
    port = int(rig.edge.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get(abuse.PLAYLIST + "?_HLS_msn=5&_HLS_part=4"))
    await abuse.wait_for_misses(rig, 1)
    assert rig.node.blocked.requests == 1 and rig.node.blocked.keys_of("127.0.0.1") == 1
    writer.close()
    await until(lambda: rig.node.blocked.requests == 0, 5, "the admission released", 0.01)
    waiting = asyncio.create_task(exchange(port, get(abuse.PLAYLIST + "?_HLS_msn=5&_HLS_part=4"), 1))
    await abuse.wait_for_misses(rig, 2)  # joins the fetch still under way
    rig.upstream.publish(10)
    assert (await waiting)[0][0] == 200 and len(rig.upstream.queries) == 1


async def test_a_bad_directive_and_a_flood_are_the_apps_to_refuse(make_rig: abuse.RigFactory):
    rig = await make_rig(max_blocked_per_client=2)
    port = int(rig.edge.rsplit(":", 1)[1])
    (refused,) = await exchange(port, get(abuse.PLAYLIST + "?_HLS_part=3"), 1)
    assert refused[0] == 400 and rig.metric("mediacore_edge_refused_total", {"reason": "bad_directive"}) == 1
    held = [asyncio.create_task(exchange(port, get(f"{abuse.PLAYLIST}?_HLS_msn=5&_HLS_part={k}"), 1)) for k in (4, 5)]
    await abuse.wait_for_misses(rig, 2)
    (third,) = await exchange(port, get(abuse.PLAYLIST + "?_HLS_msn=5&_HLS_part=6"), 1)
    assert third[0] == 429 and rig.metric("mediacore_edge_refused_total", {"reason": "blocked_per_client"}) == 1
    rig.upstream.publish(10)
    assert [(await t)[0][0] for t in held] == [200, 200]


async def test_a_request_pipelined_behind_a_parked_one_is_answered_after_it(make_rig: abuse.RigFactory):
    rig = await make_rig()
    port = int(rig.edge.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get(BLOCKING))
    await abuse.wait_for_misses(rig, 1)
    writer.write(get(abuse.part_path(5, 0)))  # sent while the reload is parked
    await asyncio.sleep(0.05)
    rig.upstream.publish()
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(first.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    playlist = await reader.readexactly(length)
    second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    part = await reader.readexactly(len(abuse.part_bytes(5, 0)))
    writer.close()
    assert b"v-abc-5.3.m4s" in playlist and second.startswith(b"HTTP/1.1 200") and part == abuse.part_bytes(5, 0)


DIRECTIVES = st.lists(
    st.tuples(
        st.sampled_from(["_HLS_msn", "_HLS_part", "_HLS_skip"]), st.from_regex(r"[A-Za-z0-9]{0,6}", fullmatch=True)
    ),
    min_size=1,
    max_size=3,
).map(lambda pairs: "&".join(f"{name}={value}" for name, value in pairs))


@settings(max_examples=200, deadline=None)
@given(PATHS, DIRECTIVES, st.sampled_from(["", "%", "+", "&", "&token=x", "#", "&v=1"]))
def test_directives_only_are_framed_and_anything_more_is_the_apps(path: str, query: str, extra: str):
    framed = frame(get(f"{path}?{query}{extra}"))
    if extra:
        assert framed is None
    else:
        assert framed == [Head(b"GET", path, "", True, b"", query)]


async def test_parked_requests_go_to_the_app_with_what_was_sent_after_them(make_rig: abuse.RigFactory):
    rig = await make_rig()
    port = int(rig.edge.rsplit(":", 1)[1])
    release = asyncio.Event()
    obtain = rig.node.obtain
    calls = 0

    async def faulty(key: str, path: str, upstream_path: str):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:  # the fast path's fetch fails on a fault of the edge's own
            await release.wait()
            raise RuntimeError("a fault")
        return await obtain(key, path, upstream_path)

    rig.node.obtain = faulty  # type: ignore[method-assign]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get(BLOCKING))
    await until(lambda: calls == 1, 5, "the reload parked", 0.01)
    writer.write(get(abuse.part_path(5, 0)))  # held while the reload is parked
    await asyncio.sleep(0.05)
    release.set()
    await until(lambda: calls == 2, 5, "the app asking again", 0.01)  # the app took the read over
    rig.upstream.publish()
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    playlist = await reader.readexactly(int(first.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
    second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    part = await reader.readexactly(len(abuse.part_bytes(5, 0)))
    writer.close()
    assert first.startswith(b"HTTP/1.1 200") and b"v-abc-5.3.m4s" in playlist
    assert second.startswith(b"HTTP/1.1 200") and part == abuse.part_bytes(5, 0)
