"""Pinning a server process to one CPU (`[server] cpu_affinity`, `edge --cpu-affinity`), as
nginx's `worker_cpu_affinity auto` does: worker i runs on the i-th CPU of the set the
process may use, and one process on the first.

A process the scheduler moves between CPUs loses its caches with each move, and a thread
woken on another CPU than the one that wakes it costs an inter-processor interrupt, which a
virtual machine pays with an exit to the hypervisor. Measured on a 2-vCPU VM with 32
real-time pushes (`mediacore-bench ingest --cpu-affinity`): 11-24 % less CPU per stream, one
process and two workers alike (docs/performance.md, "CPU affinity"). Off by default: a pinned
process cannot move off a CPU that something else keeps busy.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

_TASKS = Path("/proc/self/task")


def cpu_for(index: int, allowed: set[int]) -> int:
    """The CPU worker `index` runs on: the index-th of `allowed` in order, round robin."""
    cpus = sorted(allowed)
    return cpus[index % len(cpus)]


def pin_process(index: int) -> int | None:
    """Pin every thread of this process (those to come inherit it) to worker `index`'s CPU;
    returns the CPU, or None where the platform cannot (the process runs unpinned)."""
    if not hasattr(os, "sched_setaffinity"):
        log.warning("cpu_affinity: this platform cannot pin a process to a CPU; running unpinned")
        return None
    cpu = cpu_for(index, os.sched_getaffinity(0))
    threads = [int(t.name) for t in _TASKS.iterdir()] if _TASKS.is_dir() else [0]
    for tid in threads:  # threads started at import (a BLAS pool) keep their own mask otherwise
        try:
            os.sched_setaffinity(tid, {cpu})
        except OSError as e:  # a thread that exited meanwhile, or a CPU set a container forbids
            log.debug("cpu_affinity: thread %d not pinned: %r", tid, e)
    log.info("pinned to CPU %d", cpu)
    return cpu
