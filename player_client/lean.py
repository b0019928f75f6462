"""Many LL-HLS viewers per process at little CPU each: the load of `mediacore-bench edge`.

Each viewer does what an LL-HLS player does on the live edge, one request at a time on one
keep-alive connection (`player_client.http1`): it joins like `player.Viewer` (the newest
independent part at least PART-HOLD-BACK behind the edge, the initialization section once),
then for each part a blocking playlist reload for the next one (`_HLS_msn`/`_HLS_part`, with
`_HLS_skip=YES` when the server offers delta updates), read from its end
(`player_client.tail`), and a GET of each new part. Each part's delay is measured as
`llhls.follow` measures it (the time its bytes are in, minus the end of its PROGRAM-DATE-TIME)
once the viewer is at the live edge, that is from the first reload that brought one new part
on (`follow` joins at the newest part; the parts between the join point and the live edge are
fetched at once and not measured);
the playback buffer (`player_client.playback`) counts stalls and samples latency.

What it leaves out against `player.Viewer`: the preload-hint request made beside the reload
(one connection, one request at a time), gzip (it asks for identity) and plain HLS.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urljoin, urlsplit

from mediacore.playlist.media import MediaPlaylist
from mediacore.playlist.multivariant import MultivariantPlaylist, is_multivariant
from player_client.http1 import Http1Client
from player_client.playback import Playback
from player_client.player import ViewerStats, join_point, timeline
from player_client.tail import parts_after

RETRY_SECONDS = 0.2
"""Pause after a failed reload before the next one: about a part, as `player.Viewer` waits."""
RESUME_SECONDS = 0.2
"""Buffer that restarts a stalled viewer: one part, as `player.Viewer` resumes LL-HLS."""


class LeanViewer:
    """One LL-HLS viewer of `url` (a multivariant or media playlist) on its own connection."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.client = Http1Client(parts.hostname or "127.0.0.1", parts.port or 80)
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.stats = ViewerStats()
        self.playback = Playback(self.stats, RESUME_SECONDS)

    async def _get(self, target: str) -> tuple[int, bytes]:
        self.stats.requests += 1
        status, body = await self.client.get(target)
        self.stats.bytes += len(body)
        return status, body

    async def run(self, seconds: float) -> ViewerStats:
        start = time.monotonic()
        try:
            await self._play(start, start + seconds)
        except (ConnectionError, TimeoutError, OSError, ValueError, KeyError, IndexError) as e:
            self.stats.errors.append(f"{type(e).__name__}: {e}")
        finally:
            self.playback.finish(time.monotonic())
            self.client.close()
        return self.stats

    async def _play(self, start: float, deadline: float) -> None:
        status, body = await self._get(self.path)
        if status != 200:
            raise ConnectionError(f"playlist {status}")
        media_path = self.path
        text = body.decode()
        if is_multivariant(text):
            media_path = urljoin(self.path, MultivariantPlaylist.parse(text).variants[0].uri)
            status, body = await self._get(media_path)
            if status != 200:
                raise ConnectionError(f"playlist {status}")
            text = body.decode()
        playlist = MediaPlaylist.parse(text)
        pl = timeline(playlist)
        if not pl.low_latency or not pl.can_block or not pl.parts:
            raise ValueError("not an LL-HLS playlist with blocking reload")
        first = join_point(pl)
        init = next((s.map_uri for s in playlist.segments if s.map_uri is not None), None)
        if init is not None:
            status, _ = await self._get(urljoin(media_path, init))
            if status != 200:
                self.stats.errors.append(f"init {status}")
        skip = "&_HLS_skip=YES" if pl.can_skip else ""
        queue = [p for p in pl.parts if p.key >= first.key]
        last = (first.key[0], first.key[1] - 1)
        live = False  # at the live edge: a reload has waited for the next part (the join's backlog is behind)
        while time.monotonic() < deadline:
            for media in queue:
                if time.monotonic() >= deadline:
                    return
                if media.gap:  # nothing to load: the playhead jumps over it
                    self.stats.gaps += 1
                else:
                    status, _ = await self._get(urljoin(media_path, media.uri))
                    if status != 200:
                        self.stats.errors.append(f"media {status}")
                        last = media.key
                        continue
                    wall, now = time.time(), time.monotonic()
                    if live:
                        self.stats.part_delays.append(wall - (media.start + media.duration))
                    if self.stats.startup_seconds is None:
                        self.stats.startup_seconds = now - start
                    self.playback.media(now, wall, media.start, media.start + media.duration)
                last = media.key
            status, body = await self._get(f"{media_path}?_HLS_msn={last[0]}&_HLS_part={last[1] + 1}{skip}")
            if status != 200:
                self.stats.errors.append(f"playlist {status}")
                queue = []
                await asyncio.sleep(RETRY_SECONDS)
                continue
            queue = parts_after(body.decode(), last)
            live = live or len(queue) == 1


async def run_lean_viewers(url: str, viewers: int, seconds: float) -> list[ViewerStats]:
    """`viewers` lean LL-HLS viewers of `url` for `seconds`, on this loop."""
    return list(await asyncio.gather(*(LeanViewer(url).run(seconds) for _ in range(viewers))))
