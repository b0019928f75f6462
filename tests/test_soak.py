"""The soak's measuring and verdict (`mediacore-bench soak`): pure parts, no server. The
soak itself runs for minutes and is not a CI test; its figures are in docs/performance.md."""

from __future__ import annotations

import os

from benchmarks.soak import (
    Bounds,
    DropLog,
    Report,
    Sample,
    proc_fds,
    proc_rss,
    rss_slope_mb_per_min,
    slope,
    verdict,
)


def samples(rss_mb_per_min: float, minutes: int = 10, tasks: int = 50) -> list[Sample]:
    return [Sample(t * 6.0, int(100e6 + rss_mb_per_min * 1e6 * t / 10), 40, tasks, 200) for t in range(minutes * 10)]


def passing(**changes: object) -> Report:
    report = Report(10, 8, 200, samples=samples(0.0), viewers_playing=200)
    report.idle_before = Sample(0, 100_000_000, 30, 20, 0)
    report.idle_after = Sample(700, 101_000_000, 31, 22, 0)
    for name, value in changes.items():
        setattr(report, name, value)
    return report


def test_slope_is_least_squares_per_unit_of_x():
    assert slope([(0, 1), (1, 3), (2, 5)]) == 2.0
    assert slope([(0, 1)]) == 0.0 and slope([(1, 1), (1, 2)]) == 0.0


def test_rss_slope_reads_the_second_half_only():
    warm_up_then_flat = [Sample(t, int(1e6 * min(t, 50)), 0, 0, 0) for t in range(0, 600, 6)]
    assert rss_slope_mb_per_min(warm_up_then_flat) == 0.0
    assert abs(rss_slope_mb_per_min(samples(3.0)) - 3.0) < 1e-6


def test_a_clean_run_passes():
    assert verdict(passing()) == []


def test_each_broken_bound_is_named():
    assert "RSS grew 3.00 MB/min" in verdict(passing(samples=samples(3.0)))[0]
    assert verdict(passing(samples=samples(3.0)), Bounds(rss_slope_mb_per_min=5)) == []
    leak = passing(idle_after=Sample(700, 100_000_000, 31, 20 + 11, 0))
    assert verdict(leak) == ["tasks grew from 20 to 31 once the load stopped (task leak)"]
    fds = passing(idle_after=Sample(700, 100_000_000, 30 + 11, 20, 0))
    assert verdict(fds) == ["open fds grew from 30 to 41 once the load stopped (fd leak)"]
    stalled = passing(viewers_stalled=["soak3 LL: 40 s ['playlist 503']"])
    assert verdict(stalled) == ["1 healthy viewers not playing at the end: [\"soak3 LL: 40 s ['playlist 503']\"]"]
    assert verdict(passing(idle_after=None)) == ["the server could not be measured before and after the load"]


def test_a_viewer_of_a_dropped_publisher_waits_until_the_grace_after_it_returns():
    drops = DropLog()
    assert not drops.waiting("soak1", 100.0)
    drops.left("soak1", 100.0)
    assert drops.waiting("soak1", 101.0) and not drops.waiting("soak2", 101.0)
    drops.returned("soak1", 104.0)
    assert drops.waiting("soak1", 104.0 + 24, grace=25) and not drops.waiting("soak1", 104.0 + 26, grace=25)
    assert drops.count == 1


def test_rss_and_fds_come_from_proc():
    assert 1e6 < proc_rss(os.getpid()) < 1e11
    assert proc_fds(os.getpid()) >= 3
