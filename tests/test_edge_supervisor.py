"""The edge's worker supervisor: how often it forks a worker that keeps dying."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from edge import supervisor
from mediacore.app.supervision import WORKER_RESTART_WINDOW, WORKER_RESTARTS, RestartBudget


def test_a_worker_that_keeps_dying_is_given_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The supervisor forks a dead worker again only as often as the rule `serve --workers`
    uses allows (WORKER_RESTARTS within WORKER_RESTART_WINDOW), then gives it up and exits 1,
    instead of forking a worker that cannot start twice a second forever."""
    monkeypatch.setattr(supervisor, "RESTART_DELAY", 0.01)
    starts = tmp_path / "starts"

    def run_worker(index: int) -> int:
        with starts.open("a") as f:
            f.write(f"{index}\n")
        return 3  # fails at once, as a worker that cannot start does

    budget = RestartBudget(WORKER_RESTARTS, WORKER_RESTART_WINDOW)
    handlers = {sig: signal.getsignal(sig) for sig in supervisor.STOP_SIGNALS}
    given_up: list[int] = []
    try:
        code = supervisor.supervise(
            2, run_worker, lambda index: budget.allow(str(index), "edge-worker", 0.0), given_up.append
        )
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert code == 1
    assert sorted(given_up) == [0, 1]
    runs = starts.read_text().split()
    assert sorted(runs) == ["0"] * (1 + WORKER_RESTARTS) + ["1"] * (1 + WORKER_RESTARTS)
