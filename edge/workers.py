"""Which worker of a multi-process edge owns a stream, and so fetches it from the upstreams.

One owner per stream keeps the origin's load at one request per part however many workers
an edge runs: the others ask the owner over its loopback peer listener. The rule is a
stable hash of the stream name, so every worker (and a restarted one) agrees without
talking to the others. Sans-I/O.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

WORKER_HEADER = "X-Edge-Worker"
"""Which worker answered (sent when the edge runs several), so an operator can tell them apart."""


def owner_of(stream: str, workers: int) -> int:
    """The index of the worker that fetches `stream` from the upstreams (CRC-32: stable across
    processes and runs, unlike Python's salted `hash`)."""
    return zlib.crc32(stream.encode()) % workers


def sibling_for(stream: str | None, worker: int, peers: Sequence[str]) -> str | None:
    """The peer listener base URL to fetch `stream` from: its owner's, when that is another
    worker; None when this worker fetches it itself (it owns the stream, the path belongs to
    no stream, or the edge runs one worker)."""
    if stream is None or len(peers) < 2:
        return None
    owner = owner_of(stream, len(peers))
    return None if owner == worker else peers[owner]
