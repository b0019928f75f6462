"""How the process asks the C allocator to hand memory back.

glibc serves an allocation at or above its mmap threshold with a mapping of its own, which
free() returns to the system at once; below it, from a heap that gives memory back only
from its top. By default the threshold moves up to the size of the largest mapped block
ever freed. A server that frees a 550 KB TS segment every 2 s per stream thereby moves it
past the segment size within seconds, and from then on segments, parents joined for a
request and muxer buffers come from the heap, where the holes they leave between
long-lived LL-HLS parts are never returned: 3.4 MB per stream of RSS beyond the media the
playlists held after a minute of 8 streams (`mediacore-bench ingest`), 1.7 MB with the
threshold pinned. Pinning it (any mallopt() of the threshold does) keeps large blocks
mapped. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 128 * 1024
"""Bytes from which an allocation gets a mapping of its own (glibc's initial value, pinned):
a TS segment, a joined parent or a keyframe is returned to the system when freed; LL-HLS
parts (about 50 KB at 2 Mb/s) stay on the heap."""
_M_MMAP_THRESHOLD = -3  # mallopt parameter number, <malloc.h>
TRIM_INTERVAL = 5.0
"""Seconds between two hand-backs of the heap's free pages (malloc_trim). Frames, LL-HLS
parts and muxer buffers of different lifetimes interleave on the heap; the pages their frees
leave empty between live blocks are not returned by free() itself."""


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def heap_trimmer() -> Callable[[], None] | None:
    """glibc's malloc_trim(0) (every free page of every arena back to the system; ctypes
    releases the GIL while it runs), or None elsewhere than glibc."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release


async def trim_heap_periodically(interval: float = TRIM_INTERVAL) -> None:
    """Hand the heap's free pages back every `interval` seconds, on a thread of its own (a
    trim walks the heap: a few milliseconds the event loop does not wait for). Runs until
    cancelled; does nothing where there is no malloc_trim."""
    release = heap_trimmer()
    if release is None:
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        await loop.run_in_executor(None, release)


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold (no dynamic adjustment); False when not on glibc."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    pinned = bool(mallopt(_M_MMAP_THRESHOLD, threshold))
    if not pinned:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; the allocator keeps its dynamic threshold")
    return pinned
