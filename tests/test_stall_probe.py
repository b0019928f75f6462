"""The stall probe that HealthyStream judges its playlist polls by (tests/hostile.py): a
freeze of the server's own process is not excused, however long; a stall of the whole
machine (here: the probe's process stopped by SIGSTOP, as a host taking the cores stops
every process) is logged and excused. The loop watch names the code that held the loop."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from hostile import PLAYLIST_DEADLINE, LoopWatch, StallProbe, unexplained

FREEZE = 3 * PLAYLIST_DEADLINE


def test_unexplained_subtracts_only_the_overlap():
    assert unexplained(10.0, 10.5, []) == 0.5
    assert abs(unexplained(10.0, 10.5, [(9.0, 10.2), (10.4, 11.0)]) - 0.2) < 1e-9
    assert unexplained(10.0, 10.5, [(9.0, 12.0)]) == 0.0
    assert unexplained(10.0, 10.5, [(11.0, 12.0)]) == 0.5


async def test_a_frozen_server_process_is_not_excused():
    async with StallProbe() as probe:
        await asyncio.sleep(0.2)
        start = time.monotonic()
        time.sleep(FREEZE)  # the test's process holds its loop and its GIL: a server freeze
        end = time.monotonic()
        await asyncio.sleep(0.2)
    assert unexplained(start, end, probe.stalls) >= PLAYLIST_DEADLINE, probe.stalls


async def test_a_machine_stall_is_logged_and_excused():
    async with StallProbe() as probe:
        assert probe._process is not None
        await asyncio.sleep(0.2)
        start = time.monotonic()
        os.kill(probe._process.pid, signal.SIGSTOP)
        time.sleep(FREEZE)
        os.kill(probe._process.pid, signal.SIGCONT)
        end = time.monotonic()
        await asyncio.sleep(0.2)
    assert any(b - a >= FREEZE * 0.9 for a, b in probe.stalls), probe.stalls
    assert unexplained(start, end, probe.stalls) < PLAYLIST_DEADLINE, probe.stalls


def busy_for(seconds: float) -> None:
    """Python work that keeps the loop (and, between switch intervals, the GIL)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


async def test_the_loop_watch_names_what_held_the_loop():
    watch = LoopWatch()
    watch.start()
    try:
        await asyncio.sleep(0.2)
        start = time.monotonic()
        busy_for(FREEZE)
        end = time.monotonic()
        await asyncio.sleep(0.2)
    finally:
        watch.stop()
    report = watch.report(start, end)
    assert "in busy_for" in report, report
    assert watch.report(end + 1.0, end + 2.0) == "the loop watch saw the loop held at no point of it"
