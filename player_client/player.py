"""An asyncio HLS / LL-HLS viewer with a simulated playback buffer, and many per process.

Each viewer joins like hls.js does: plain HLS three segments behind the live edge, LL-HLS
at the newest independent part at least PART-HOLD-BACK behind the edge. It downloads media
in order (parts with blocking playlist reloads and preload hints in LL mode), adds what it
fetched to a buffer measured on the PROGRAM-DATE-TIME timeline, and plays it in real time:
when the playhead reaches the end of the buffer, that is a stall, resumed once a part (or a
segment) is buffered again. Latency is now minus the PDT at the playhead.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urljoin

import aiohttp

from mediacore.playlist.media import MediaPlaylist
from mediacore.playlist.multivariant import MultivariantPlaylist, is_multivariant


@dataclass
class Media:
    """A fetchable unit: a segment (plain HLS) or a part (LL-HLS), placed on the PDT timeline."""

    key: tuple[int, int]  # (msn, part index or -1 for a whole segment)
    uri: str
    start: float  # PDT seconds
    duration: float
    independent: bool = True
    gap: bool = False  # GAP=YES / EXT-X-GAP: no media there; players skip it without a request


@dataclass
class Playlist:
    """What a viewer needs of a media playlist: its media on the PDT timeline."""

    target_duration: float = 0.0
    part_hold_back: float = 0.0
    can_block: bool = False
    can_skip: bool = False
    low_latency: bool = False
    hint: str | None = None  # EXT-X-PRELOAD-HINT URI of the next part
    ended: bool = False
    segments: list[Media] = field(default_factory=list)
    parts: list[Media] = field(default_factory=list)


def timeline(playlist: MediaPlaylist) -> Playlist:
    """Place the segments and parts of a parsed playlist on the PDT timeline (segments
    without a PROGRAM-DATE-TIME cannot be placed and are left out)."""
    control = playlist.server_control
    pl = Playlist(
        target_duration=float(playlist.target_duration),
        part_hold_back=(control.part_hold_back or 0.0) if control else 0.0,
        can_block=bool(control and control.can_block_reload),
        can_skip=bool(control and control.can_skip_until is not None),
        low_latency=playlist.part_target is not None,
        hint=playlist.preload_hint,
        ended=playlist.ended,
    )
    for seg in playlist.segments:
        if seg.program_date_time is None:
            continue
        offset = 0.0
        for index, part in enumerate(seg.parts):
            pl.parts.append(
                Media(
                    (seg.msn, index),
                    part.uri,
                    seg.program_date_time + offset,
                    part.duration,
                    part.independent,
                    part.gap,
                )
            )
            offset += part.duration
        if seg.uri is not None:
            pl.segments.append(Media((seg.msn, -1), seg.uri, seg.program_date_time, seg.duration, gap=seg.gap))
    return pl


def parse_media_playlist(text: str) -> Playlist:
    return timeline(MediaPlaylist.parse(text))


def join_point(pl: Playlist) -> Media:
    """The part an LL-HLS viewer starts at: the newest independent part at least PART-HOLD-BACK
    behind the live edge (hls.js), else the first listed."""
    edge = pl.parts[-1].start + pl.parts[-1].duration
    candidates = [p for p in pl.parts if p.independent and p.start <= edge - pl.part_hold_back]
    return candidates[-1] if candidates else pl.parts[0]


@dataclass
class ViewerStats:
    startup_seconds: float | None = None
    latencies: list[float] = field(default_factory=list)
    stalls: int = 0
    stall_seconds: float = 0.0
    bytes: int = 0
    requests: int = 0
    gaps: int = 0  # GAP parts or segments skipped
    errors: list[str] = field(default_factory=list)
    last_playing: float = 0.0  # monotonic time the playhead last moved
    part_delays: list[float] = field(default_factory=list)
    """Seconds each LL-HLS part arrived after the end of its PROGRAM-DATE-TIME once the viewer
    is at the live edge, as `llhls.follow` measures it (filled by `player_client.lean`)."""


class Viewer:
    def __init__(self, url: str, session: aiohttp.ClientSession, low_latency: bool = True) -> None:
        self.url = url
        self.session = session
        self.prefer_ll = low_latency
        self.stats = ViewerStats()
        self._buffer_end: float | None = None  # PDT seconds
        self._playhead: float | None = None
        self._playing = False
        self._last_tick = 0.0
        self._stall_started = 0.0
        self._media_url = ""

    async def _get(self, url: str) -> tuple[int, bytes]:
        self.stats.requests += 1
        async with self.session.get(url) as r:
            body = await r.read()
            self.stats.bytes += len(body)
            return r.status, body

    async def _playlist(self, query: str = "") -> Playlist | None:
        status, body = await self._get(self._media_url + query)
        if status != 200:
            self.stats.errors.append(f"playlist {status}")
            return None
        return self._parse(body.decode())

    def _parse(self, text: str) -> Playlist | None:
        """A playlist the viewer can use, or None (counted as an error) for a broken one."""
        try:
            return parse_media_playlist(text)
        except (ValueError, KeyError) as e:
            self.stats.errors.append(f"playlist unreadable: {e}")
            return None

    def _tick(self, resume_after: float) -> None:
        """Advance the simulated playhead to now; detect stalls and resumptions."""
        now = time.monotonic()
        if self._buffer_end is None or self._playhead is None:
            return
        if self._playing:
            self._playhead += now - self._last_tick
            if self._playhead >= self._buffer_end:
                self._playhead = self._buffer_end
                self._playing = False
                self.stats.stalls += 1
                self._stall_started = now
        elif self._buffer_end - self._playhead >= resume_after:
            if self.stats.startup_seconds is not None:
                self.stats.stall_seconds += now - self._stall_started
            self._playing = True
        self._last_tick = now
        if self._playing:
            self.stats.latencies.append(time.time() - self._playhead)
            self.stats.last_playing = now

    async def _fetch(
        self, media: Media, start: float, prefetched: asyncio.Task[tuple[int, bytes]] | None = None
    ) -> bool:
        if media.gap:  # nothing to load: the playhead jumps over it, as hls.js does
            if prefetched is not None:
                prefetched.cancel()
            self.stats.gaps += 1
            status = 200
        elif prefetched is not None:
            status, _ = await prefetched
        else:
            status, _ = await self._get(urljoin(self._media_url, media.uri))
        if status != 200:
            self.stats.errors.append(f"media {status}")
            return False
        end = media.start + media.duration
        if self._buffer_end is None:
            self._playhead = media.start
            self._last_tick = time.monotonic()
        self._buffer_end = max(self._buffer_end or end, end)
        if self.stats.startup_seconds is None:
            self.stats.startup_seconds = time.monotonic() - start
            self._playing = True
            self._last_tick = time.monotonic()
        return True

    async def run(self, seconds: float) -> ViewerStats:
        start = time.monotonic()
        deadline = start + seconds
        status, body = await self._get(self.url)
        if status != 200:
            self.stats.errors.append(f"playlist {status}")
            return self.stats
        text = body.decode()
        if is_multivariant(text):
            try:
                variant = MultivariantPlaylist.parse(text).variants[0].uri
            except (ValueError, KeyError, IndexError) as e:
                self.stats.errors.append(f"multivariant playlist unreadable: {e}")
                return self.stats
            self._media_url = urljoin(self.url, variant)
            pl = await self._playlist()
        else:
            self._media_url = self.url
            pl = self._parse(text)
        if pl is None:
            return self.stats
        ticker = asyncio.create_task(self._ticks(deadline, pl))
        try:
            if pl.low_latency and self.prefer_ll and pl.can_block:
                await self._follow_parts(pl, start, deadline)
            else:
                await self._follow_segments(pl, start, deadline)
        except (TimeoutError, aiohttp.ClientError) as e:
            self.stats.errors.append(type(e).__name__)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        return self.stats

    async def _ticks(self, deadline: float, pl: Playlist) -> None:
        resume = 0.2 if pl.low_latency and self.prefer_ll else min(pl.target_duration, 2.0)
        while time.monotonic() < deadline:
            self._tick(resume)
            await asyncio.sleep(0.05)

    async def _follow_segments(self, pl: Playlist, start: float, deadline: float) -> None:
        queue = pl.segments[-3:]  # hls.js: three target durations behind the edge
        done: set[tuple[int, int]] = set()
        while time.monotonic() < deadline:
            for media in queue:
                if media.key not in done and time.monotonic() < deadline:
                    if await self._fetch(media, start):
                        done.add(media.key)
            await asyncio.sleep(max(0.5, pl.target_duration / 2))
            fresh = await self._playlist()
            if fresh is not None:
                pl = fresh
                queue = [m for m in pl.segments if m.key not in done and m.key > max(done, default=(-1, -1))]

    async def _follow_parts(self, pl: Playlist, start: float, deadline: float) -> None:
        """Parts in order. Each reload blocks for the next part (_HLS_msn/_HLS_part) and asks
        for a delta update (_HLS_skip=YES) when offered; meanwhile the hinted part is
        requested at once (the server holds it until complete), so its bytes are in hand
        when the playlist that lists it arrives."""
        first = join_point(pl)
        queue = [p for p in pl.parts if p.key >= first.key]
        last = first.key
        prefetch: dict[str, asyncio.Task[tuple[int, bytes]]] = {}
        try:
            while time.monotonic() < deadline:
                for media in queue:
                    if time.monotonic() >= deadline:
                        return
                    await self._fetch(media, start, prefetch.pop(media.uri, None))
                    last = media.key
                if pl.hint and pl.hint not in prefetch and len(prefetch) < 2:
                    prefetch[pl.hint] = asyncio.create_task(self._get(urljoin(self._media_url, pl.hint)))
                msn, index = last
                skip = "&_HLS_skip=YES" if pl.can_skip else ""
                fresh = await self._playlist(f"?_HLS_msn={msn}&_HLS_part={index + 1}{skip}")
                if fresh is None:
                    await asyncio.sleep(0.2)
                    continue
                pl = fresh
                queue = [p for p in fresh.parts if p.key > last]
                if not queue and fresh.parts and fresh.parts[0].key > last:
                    last = fresh.parts[-1].key  # fell out of the part window: rejoin at the edge
                for uri in [u for u in prefetch if u not in {p.uri for p in queue} and u != pl.hint]:
                    prefetch.pop(uri).cancel()  # a hint that was abandoned (H7)
        finally:
            for task in prefetch.values():
                task.cancel()
            await asyncio.gather(*prefetch.values(), return_exceptions=True)


async def run_viewers(
    url: str, viewers: int, seconds: float, low_latency: bool = True, connections: int = 0
) -> list[ViewerStats]:
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=max(20.0, seconds))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [Viewer(url, session, low_latency).run(seconds) for _ in range(viewers)]
        return list(await asyncio.gather(*tasks))


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of the values by rank, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarize(stats: list[ViewerStats]) -> dict[str, object]:
    latencies = sorted(x for s in stats for x in s.latencies[len(s.latencies) // 4 :])
    startups = sorted(s.startup_seconds for s in stats if s.startup_seconds is not None)

    def pct(values: list[float], q: float) -> float | None:
        value = percentile(values, q)
        return None if value is None else round(value, 3)

    return {
        "viewers": len(stats),
        "started": len(startups),
        "startup_p50_s": pct(startups, 0.5),
        "latency_p50_s": pct(latencies, 0.5),
        "latency_p99_s": pct(latencies, 0.99),
        "part_delay_p99_s": pct(sorted(d for s in stats for d in s.part_delays), 0.99),
        "stalls": sum(s.stalls for s in stats),
        "stall_seconds": round(sum(s.stall_seconds for s in stats), 2),
        "bytes": sum(s.bytes for s in stats),
        "requests": sum(s.requests for s in stats),
        "errors": sum(len(s.errors) for s in stats),
        "mean_latency_s": round(statistics.fmean(latencies), 3) if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="mediacore-play", description="simulated HLS / LL-HLS viewers")
    parser.add_argument("url", help="multivariant or media playlist URL (ll.m3u8 for LL-HLS)")
    parser.add_argument("--viewers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--no-ll", action="store_true", help="play LL-HLS playlists as plain HLS")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    stats = asyncio.run(run_viewers(args.url, args.viewers, args.seconds, not args.no_ll))
    summary = summarize(stats)
    if args.json:
        counts = [asdict(s) | {"latencies": len(s.latencies), "part_delays": len(s.part_delays)} for s in stats]
        print(json.dumps({"summary": summary, "viewers": counts}))
    else:
        for key, value in summary.items():
            print(f"{key:>16}: {value}")
    return 0 if summary["started"] == args.viewers else 1


if __name__ == "__main__":
    sys.exit(main())
