"""How `make test` splits the suite between its workers (conftest.unit_of_work): whole modules,
and the heavy and deadline modules in one unit, so two browsers, encoders or benchmark suites
never share the two cores and no wall-clock deadline is judged beside one. The lists are
checked against what the source shows: a browser harness, a timed healthy stream."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import DEADLINE_MODULES, HEAVY_MODULES, ONE_AT_A_TIME, unit_of_work

TESTS = Path(__file__).resolve().parent
# What the source shows of a heavy module: it plays in headless Chromium.
STARTS_A_BROWSER = re.compile(r"\b(run_harness|play_in_browser|watch_harness)\b")
# ...and of a deadline module: it runs a hostile peer beside a healthy stream it times.
TIMES_A_HEALTHY_STREAM = re.compile(r"\bHealthyStream\b")


def modules_matching(pattern: re.Pattern[str]) -> set[str]:
    modules = [path for path in TESTS.glob("test_*.py") if path.name != Path(__file__).name]
    return {path.name for path in modules if pattern.search(path.read_text())}


def test_every_listed_module_exists() -> None:
    assert sorted(name for name in HEAVY_MODULES | DEADLINE_MODULES if not (TESTS / name).is_file()) == []


def test_every_module_that_starts_a_browser_is_heavy() -> None:
    browsers = modules_matching(STARTS_A_BROWSER)
    assert browsers, "the pattern finds the browser tests"
    assert sorted(browsers - HEAVY_MODULES) == []


def test_every_module_that_times_a_healthy_stream_is_a_deadline_module() -> None:
    timed = modules_matching(TIMES_A_HEALTHY_STREAM)
    assert timed, "the pattern finds the hostile-peer tests"
    assert sorted(timed - DEADLINE_MODULES) == []


def test_a_light_module_is_its_own_unit_and_the_others_share_one() -> None:
    assert unit_of_work("tests/test_ts_mux.py::test_counters_run_on_over_many_segments") == "tests/test_ts_mux.py"
    assert unit_of_work("tests/test_ts_mux.py::test_x[a::b]") == "tests/test_ts_mux.py"
    heavy, deadline = sorted(HEAVY_MODULES), sorted(DEADLINE_MODULES)
    units = {unit_of_work(f"tests/{heavy[0]}::test_a"), unit_of_work(f"tests/{deadline[-1]}::test_b[1]")}
    assert units == {ONE_AT_A_TIME}
