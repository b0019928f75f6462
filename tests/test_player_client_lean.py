"""The lean LL-HLS viewer's parts: the playlist tail reader agrees with the full parser, the
event-driven playback buffer counts stalls where they happen, and the HTTP/1.1 connection
keeps alive, reconnects and times out."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_llhls_units import rendition_with

from player_client.http1 import Http1Client
from player_client.playback import Playback
from player_client.player import ViewerStats, parse_media_playlist
from player_client.tail import parts_after


def placed(parts: list) -> list[tuple]:
    return [(p.key, p.uri, round(p.start, 6), p.duration, p.independent, p.gap) for p in parts]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(0, 9), st.data(), st.booleans())
def test_the_tail_gives_the_parts_the_full_parser_places_after_any_part(parents, in_progress, data, delta):
    r = rendition_with(parents=parents, parts_in_progress=in_progress)
    gap_from = data.draw(st.integers(0, 10))
    for i in range(gap_from, 10):  # a parent whose end is a hole (GAP parts) now and then
        r.add_part(b"", 0.2, False, i == gap_from, i == 9, 3000.0 + i * 0.2, now=200.0, gap=True)
    text = r.render("YES" if delta else "")
    full = parse_media_playlist(text).parts
    last = data.draw(st.sampled_from([(-1, 0), *[p.key for p in full]]))
    assert placed(parts_after(text, last)) == placed([p for p in full if p.key > last])


def test_the_tail_of_a_playlist_without_dates_or_with_a_foreign_uri():
    assert parts_after('#EXTM3U\n#EXT-X-PART:DURATION=0.2,URI="v-a-1.0.m4s"\n', (0, 0)) == []
    with pytest.raises(ValueError):
        parts_after('#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z\n#EXT-X-PART:DURATION=0.2,URI="x.m4s"\n', (0, 0))


def test_playback_counts_a_stall_when_the_buffer_runs_dry_and_resumes_on_a_part():
    stats = ViewerStats()
    play = Playback(stats, resume_after=0.2)
    play.media(now=10.0, wall=1000.5, start=1000.0, end=1000.2)  # starts playing at once
    play.media(now=10.1, wall=1000.6, start=1000.2, end=1000.4)
    assert stats.stalls == 0 and stats.latencies == [pytest.approx(0.5), pytest.approx(0.5)]
    play.media(now=10.9, wall=1001.4, start=1000.4, end=1000.6)  # ran dry at 10.4: stalled 0.5 s
    assert stats.stalls == 1 and stats.stall_seconds == pytest.approx(0.5) and play.playing
    play.media(now=11.0, wall=1001.5, start=1000.6, end=1000.8)
    assert stats.stalls == 1 and stats.latencies[-1] == pytest.approx(1.0)  # 0.5 s later than before
    play.finish(now=12.0)  # ran dry again before the end
    assert stats.stalls == 2


async def serve(answers: list[bytes], seen: list[bytes]) -> tuple[asyncio.Server, int]:
    """A server answering each request with the next of `answers` (split in two writes)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            try:
                seen.append(await reader.readuntil(b"\r\n\r\n"))
            except asyncio.IncompleteReadError:
                break
            answer = answers.pop(0)
            writer.write(answer[:7])
            await writer.drain()
            writer.write(answer[7:])
            if b"Connection: close" in answer:
                break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_requests_share_one_connection_until_the_server_closes_it():
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ]
    seen: list[bytes] = []
    server, port = await serve(answers, seen)
    client = Http1Client("127.0.0.1", port)
    try:
        got = [await client.get(p) for p in ("/a", "/b?_HLS_msn=1", "/c", "/d")]
    finally:
        client.close()
        server.close()
    assert got == [(200, b"abc"), (404, b"no"), (200, b"x"), (200, b"ok")]
    assert seen[1].startswith(b"GET /b?_HLS_msn=1 HTTP/1.1\r\nHost: 127.0.0.1:")


async def test_a_request_without_an_answer_times_out():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    client = Http1Client("127.0.0.1", server.sockets[0].getsockname()[1], timeout=0.2)
    try:
        with pytest.raises(TimeoutError):
            await client.get("/never")
    finally:
        client.close()
        server.close()
