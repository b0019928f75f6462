"""CPU affinity ([server] cpu_affinity, `edge --cpu-affinity`): each worker runs on its own
CPU of the set the process may use, every thread of it included, round robin when there are
more workers than CPUs; the parent of `serve --workers N` is not pinned."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, until

from benchmarks.ingest import free_port
from benchmarks.servers import READY_LINE, SERVE_TIMEOUT, serve_command, serve_env
from mediacore.app.affinity import cpu_for


def test_workers_take_the_allowed_cpus_in_order_round_robin():
    assert [cpu_for(i, {0, 1}) for i in range(4)] == [0, 1, 0, 1]
    assert [cpu_for(i, {7, 2, 5}) for i in range(4)] == [2, 5, 7, 2]


def thread_cpus(pid: int) -> list[set[int]]:
    """The CPU set of every thread of process `pid`."""
    return [os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]


async def check_pinned(command: list[str], ready: bytes, workers: int) -> None:
    allowed = os.sched_getaffinity(0)
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=str(ROOT),
        env=serve_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), SERVE_TIMEOUT)
        assert ready in line, line
        children = psutil.Process(proc.pid).children()
        assert len(children) == workers
        assert os.sched_getaffinity(proc.pid) == allowed  # the parent floats
        # A worker starts its threads as it comes up, which on a busy machine can trail the
        # parent's ready line; "every thread" is checked once there is more than one.
        await until(lambda: all(len(thread_cpus(c.pid)) > 1 for c in children), SERVE_TIMEOUT, "workers' threads")
        pinned = {}
        for child in children:
            cpus = thread_cpus(child.pid)
            assert len(cpus) > 1 and all(c == cpus[0] for c in cpus), cpus  # every thread, on one CPU
            (pinned[child.pid],) = cpus[0]
        assert sorted(pinned.values()) == sorted(cpu_for(i, allowed) for i in range(workers))
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


@pytest.mark.slow
async def test_serve_workers_each_run_on_their_own_cpu(tmp_path: Path):
    config = tmp_path / "mediacore.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    command = [
        *serve_command(config, "warning", workers=2),
        *["--host", "127.0.0.1", "--http-port", str(free_port()), "--rtmp-port", str(free_port())],
        *["--rtsp-port", str(free_port()), "--admin-port", str(free_port()), "--cpu-affinity"],
    ]
    await check_pinned(command, READY_LINE, workers=2)


@pytest.mark.slow
async def test_edge_workers_each_run_on_their_own_cpu():
    command = [
        *[sys.executable, "-m", "mediacore.app.cli", "edge", "--origin", "http://127.0.0.1:9"],
        *["--host", "127.0.0.1", "--http-port", str(free_port()), "--workers", "2", "--cpu-affinity"],
    ]
    await check_pinned(command, b"edge serving on", workers=2)
