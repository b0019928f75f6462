"""Times LL-HLS blocking reloads through a worker that does not own the stream against the
same reloads answered by the owner (tests/test_workers.py runs it in a process of its own).

usage: python blocking_reloads.py PARTS NAME:OWNER_PORT:OTHER_PORT ...
Prints a JSON list: per part and stream, seconds from the owner's answer to the other
worker's answer of the same `_HLS_msn` / `_HLS_part` reload, both sent at once. The first
WARMUP_PARTS of each stream open the connections and are not counted.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time

import aiohttp
import uvloop

HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]*-(\d+)\.(\d+)\.m4s)"')
"""The part a reload blocks on: the preload hint of the playlist answered last."""
WARMUP_PARTS = 3


async def timed_get(session: aiohttp.ClientSession, url: str) -> tuple[float, int, str]:
    async with session.get(url) as r:
        body = await r.text()
        return time.monotonic(), r.status, body


async def hops(name: str, owner_port: int, other_port: int, parts: int) -> list[float]:
    """Seconds between the owner's answer to a blocked reload and the same reload's answer
    through the other worker, one per part."""
    found = []
    path = f"/live/{name}/ll/video.m3u8"
    async with aiohttp.ClientSession() as session:
        _, _, text = await timed_get(session, f"http://127.0.0.1:{owner_port}{path}")
        for n in range(WARMUP_PARTS + parts):
            hint = HINT.search(text)
            assert hint, text
            query = f"?_HLS_msn={hint[2]}&_HLS_part={hint[3]}"
            (direct, s1, text), (proxied, s2, via_other) = await asyncio.gather(
                timed_get(session, f"http://127.0.0.1:{owner_port}{path}{query}"),
                timed_get(session, f"http://127.0.0.1:{other_port}{path}{query}"),
            )
            assert (s1, s2) == (200, 200)
            assert f'URI="{hint[1]}"' in text and f'URI="{hint[1]}"' in via_other  # the part is listed
            if n >= WARMUP_PARTS:
                found.append(proxied - direct)
    return found


async def main(parts: int, targets: list[str]) -> list[float]:
    results = await asyncio.gather(
        *(hops(name, int(owner), int(other), parts) for name, owner, other in (t.split(":") for t in targets))
    )
    return [h for per_stream in results for h in per_stream]


if __name__ == "__main__":
    print(json.dumps(uvloop.run(main(int(sys.argv[1]), sys.argv[2:]))))
