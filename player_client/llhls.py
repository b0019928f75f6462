"""A single LL-HLS follower that measures how late each part arrives against its
PROGRAM-DATE-TIME (the ingest wall clock): blocking reload for the next part, then the part.

Live latency is modelled as a player holding PART-HOLD-BACK behind the newest part:
part delay (now - PDT of the part's end, when its bytes are in) + PART-HOLD-BACK. The
full viewer, with a playback buffer and stalls, is player_client.player.Viewer."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

import aiohttp

from mediacore.playlist.multivariant import MultivariantPlaylist
from player_client.player import parse_media_playlist


@dataclass
class ClientStats:
    startup_seconds: float | None = None
    part_delays: list[float] = field(default_factory=list)
    part_hold_back: float = 0.0
    parts: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def latencies(self) -> list[float]:
        return [d + self.part_hold_back for d in self.part_delays]


async def follow(url: str, seconds: float, session: aiohttp.ClientSession | None = None) -> ClientStats:
    """Follow the video rendition of an LL-HLS multivariant playlist for `seconds`."""
    own = session is None
    session = session or aiohttp.ClientSession()
    stats = ClientStats()
    start = time.monotonic()
    try:
        async with session.get(url) as r:
            multivariant = await r.text()
        media_uri = MultivariantPlaylist.parse(multivariant).variants[0].uri
        media_url = urljoin(url, media_uri)
        async with session.get(media_url) as r:
            playlist = parse_media_playlist(await r.text())
        stats.part_hold_back = playlist.part_hold_back
        last = playlist.parts[-1].key
        while time.monotonic() - start < seconds:
            async with session.get(f"{media_url}?_HLS_msn={last[0]}&_HLS_part={last[1] + 1}") as r:
                if r.status != 200:
                    stats.errors.append(f"playlist {r.status}")
                    await asyncio.sleep(0.2)
                    continue
                playlist = parse_media_playlist(await r.text())
            for part in [p for p in playlist.parts if p.key > last]:
                if part.gap:  # a hole in the media: nothing to load
                    last = part.key
                    continue
                async with session.get(urljoin(media_url, part.uri)) as r:
                    body = await r.read()
                    if r.status != 200:
                        stats.errors.append(f"part {r.status}")
                        continue
                stats.parts += 1
                stats.bytes += len(body)
                stats.part_delays.append(time.time() - (part.start + part.duration))
                if stats.startup_seconds is None:
                    stats.startup_seconds = time.monotonic() - start
                last = part.key
    finally:
        if own:
            await session.close()
    return stats
