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

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 128 * 1024
"""Bytes from which an allocation gets a mapping of its own (glibc's initial value, pinned):
a TS segment, a joined parent or a keyframe is returned to the system when freed; LL-HLS
parts (about 50 KB at 2 Mb/s) stay on the heap."""
_M_MMAP_THRESHOLD = -3  # mallopt parameter number, <malloc.h>


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold (no dynamic adjustment); False when not on glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    pinned = bool(mallopt(_M_MMAP_THRESHOLD, threshold))
    if not pinned:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; the allocator keeps its dynamic threshold")
    return pinned
