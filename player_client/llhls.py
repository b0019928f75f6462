"""An asyncio LL-HLS client that follows a live stream the way a low-latency player does:
Blocking Playlist Reload for the next part, then the part itself, and measures how late
each part arrives against its PROGRAM-DATE-TIME (the ingest wall clock).

Live latency is modelled as a player holding PART-HOLD-BACK behind the newest part:
part delay (now - PDT of the part's end, when its bytes are in) + PART-HOLD-BACK."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

import aiohttp

from mediacore.packager.playlist import parse_date_time

_ATTRS = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


@dataclass
class PartInfo:
    msn: int
    index: int
    uri: str
    start_pdt: float
    duration: float


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


def parse_parts(text: str) -> tuple[list[PartInfo], float]:
    """Every listed part with its PDT, and PART-HOLD-BACK."""
    parts: list[PartInfo] = []
    hold_back = 0.0
    msn = 0
    pdt: float | None = None
    offset = 0.0
    index = 0
    for line in text.splitlines():
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-MEDIA-SEQUENCE":
            msn = int(value)
        elif tag == "#EXT-X-SKIP":
            msn += int(dict(_ATTRS.findall(value))["SKIPPED-SEGMENTS"])
        elif tag == "#EXT-X-SERVER-CONTROL":
            hold_back = float(dict(_ATTRS.findall(value)).get("PART-HOLD-BACK", "0"))
        elif tag == "#EXT-X-PROGRAM-DATE-TIME":
            pdt, offset, index = parse_date_time(value), 0.0, 0
        elif tag == "#EXT-X-PART" and pdt is not None:
            attrs = {k: v.strip('"') for k, v in _ATTRS.findall(value)}
            duration = float(attrs["DURATION"])
            parts.append(PartInfo(msn, index, attrs["URI"], pdt + offset, duration))
            offset += duration
            index += 1
        elif line and not line.startswith("#"):
            msn += 1
            pdt = None
    return parts, hold_back


async def follow(url: str, seconds: float, session: aiohttp.ClientSession | None = None) -> ClientStats:
    """Follow the video rendition of an LL-HLS multivariant playlist for `seconds`."""
    own = session is None
    session = session or aiohttp.ClientSession()
    stats = ClientStats()
    start = time.monotonic()
    try:
        async with session.get(url) as r:
            multivariant = await r.text()
        media_uri = next(ln for ln in multivariant.splitlines() if ln and not ln.startswith("#"))
        media_url = urljoin(url, media_uri)
        async with session.get(media_url) as r:
            text = await r.text()
        parts, stats.part_hold_back = parse_parts(text)
        last = parts[-1]
        while time.monotonic() - start < seconds:
            query = f"?_HLS_msn={last.msn}&_HLS_part={last.index + 1}"
            async with session.get(media_url + query) as r:
                if r.status != 200:
                    stats.errors.append(f"playlist {r.status}")
                    await asyncio.sleep(0.2)
                    continue
                text = await r.text()
            parts, stats.part_hold_back = parse_parts(text)
            fresh = [p for p in parts if (p.msn, p.index) > (last.msn, last.index)]
            for part in fresh:
                async with session.get(urljoin(media_url, part.uri)) as r:
                    body = await r.read()
                    if r.status != 200:
                        stats.errors.append(f"part {r.status}")
                        continue
                stats.parts += 1
                stats.bytes += len(body)
                stats.part_delays.append(time.time() - (part.start_pdt + part.duration))
                if stats.startup_seconds is None:
                    stats.startup_seconds = time.monotonic() - start
            if fresh:
                last = fresh[-1]
    finally:
        if own:
            await session.close()
    return stats
