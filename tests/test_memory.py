"""The allocator settings the server runs with (mediacore/app/memory.py)."""

from __future__ import annotations

import asyncio
import random

import pytest

from mediacore.app.memory import heap_trimmer, pin_mmap_threshold, trim_heap_periodically


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_trimming_hands_free_heap_pages_in_the_middle_of_the_heap_back():
    release = heap_trimmer()
    if release is None:
        pytest.skip("no glibc malloc_trim here")
    pin_mmap_threshold()
    rng = random.Random(7)
    blocks: list[bytes | None] = [bytes(rng.randint(8_000, 100_000)) for _ in range(2_000)]  # heap, not mmap
    for i in range(0, len(blocks), 2):
        blocks[i] = None  # holes between live blocks: free() alone keeps them
    release()
    before = _rss_kb()
    blocks = [bytes(rng.randint(8_000, 100_000)) for _ in range(2_000)]
    for i in range(0, len(blocks), 2):
        blocks[i] = None
    after_free = _rss_kb()
    release()
    after_trim = _rss_kb()
    assert after_free - after_trim > 10_000, (before, after_free, after_trim)  # tens of MB came back
    del blocks


async def test_the_periodic_trim_runs_until_cancelled():
    task = asyncio.create_task(trim_heap_periodically(0.01))
    await asyncio.sleep(0.1)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
