"""Every `mediacore-bench` suite runs end to end and reports figures (no speed assertions)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from benchmarks.peers import nginx_rtmp_module

pytestmark = pytest.mark.slow


def run_suite(tmp_path, suite: str, *args: str, timeout: float = 240) -> tuple[str, dict]:
    """Run `mediacore-bench SUITE ARGS --json FILE`; returns (stdout, the JSON report)."""
    out = tmp_path / f"{suite}.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", suite, *args, "--json", str(out)],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, json.loads(out.read_text())


def test_ingest_suite_runs_and_writes_json(tmp_path):
    stdout, report = run_suite(
        tmp_path, "ingest", "--streams", "2", "--seconds", "4", "--warmup", "3", "--memory-samples", "2", timeout=180
    )
    assert "CPU s/stream-s" in stdout
    ours = report["results"][0]
    assert ours["server"] == "mediacore" and ours["streams_live"] == 2
    assert ours["cpu_per_stream_second"] > 0
    if nginx_rtmp_module() is not None:
        assert report["results"][1]["server"] == "nginx-rtmp"
        assert report["results"][1]["streams_live"] == 2
        assert "streams_per_core_vs_nginx" in report


def test_ingest_suite_reports_the_media_held(tmp_path):
    _, report = run_suite(
        tmp_path,
        "ingest",
        *("--streams", "1", "--seconds", "3", "--warmup", "4", "--no-peers", "--memory-samples", "3", "--tcp-nodelay"),
    )
    ours = report["results"][0]
    assert ours["held_per_stream_mb"] > 0
    # the largest sample of RSS beyond the media is at least their mean (0.02: three roundings)
    mean_beyond = ours["rss_per_stream_mb"] - ours["held_per_stream_mb"]
    assert ours["beyond_media_max_per_stream_mb"] >= mean_beyond - 0.02
    assert report["memory_samples"] == 3 and report["tcp_nodelay"]  # the push went live with the option


def test_replay_suite_runs_and_writes_json(tmp_path):
    stdout, report = run_suite(tmp_path, "replay", "--streams", "2", "--seconds", "6", "--runs", "1", timeout=180)
    assert "ms per stream-second" in stdout
    (result,) = report["results"]
    assert result["streams"] == 2 and result["media_seconds"] > 4 and result["ms_per_stream_second"] > 0


def test_latency_suite_runs_and_writes_json(tmp_path):
    stdout, report = run_suite(tmp_path, "latency", "--seconds", "12", timeout=240)
    assert "hls.js LL-HLS: latency (median)" in stdout
    assert report["hlsjs_ll"]["fatal"] is None
    assert report["player_client"]["parts"] > 20
    assert report["blocked_response"]["playlist_p99_s_at_most"] is not None


def test_latency_suite_names_the_second_of_each_stall_and_what_was_buffered():
    from benchmarks.latency import stall_moments

    def sample(t: float, stalls: int, end: float, catch_ups: int) -> dict:
        return {"t": t, "stalls": stalls, "buffered": [[0.0, end]], "latency": 0.9, "catchUps": catch_ups}

    page = {"start": sample(1.0, 0, 2.0, 0), "samples": [sample(2.0, 0, 2.125, 1), sample(2.125, 1, 2.125, 1)]}
    assert stall_moments(page) == [
        {
            "second": 2,
            "ahead_before_s": 0.125,
            "ahead_s": 0.0,
            "latency_before_s": 0.9,
            "catch_ups_before": 1,
            "catch_ups": 1,
        }
    ]
    assert stall_moments({"start": sample(1.0, 0, 2.0, 0), "samples": [sample(2.0, 0, 3.0, 0)]}) == []


def test_fanout_suite_runs_and_writes_json_and_png(tmp_path):
    _, report = run_suite(tmp_path, "fanout", "--edges", "2", "--tiers", "2", "--viewers", "20", "--seconds", "8")
    assert report["viewers"]["started"] == 20
    assert report["origin_requests"] < report["viewer_requests"] / 5  # the edges absorbed the load
    assert (tmp_path / "fanout.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_edge_suite_runs_and_writes_json(tmp_path):
    args = ("--seconds", "2", "--connections", "10", "--viewers", "20", "--workers", "2", "--viewer-seconds", "6")
    _, report = run_suite(tmp_path, "edge", *args, timeout=300)
    assert report["segment"]["mediacore-edge"]["requests_per_s"] > 0
    assert report["segment"]["mediacore-edge"]["non_2xx"] == 0
    assert report["playlist"]["nginx"]["non_2xx"] == 0  # nginx with two worker processes serves too
    assert report["ll_viewers"]["viewers"]["started"] == 20 and report["ll_viewers"]["client_processes"] == 1


def test_rtp_suite_runs_and_writes_json(tmp_path):
    _, report = run_suite(tmp_path, "rtp", "--packets", "20000", timeout=120)
    assert report["packets"] > 19000
    ours = report["results"]["mediacore (compiled)"]
    assert all(ours[row] > 0 for row in ("header", "payload", "jitter", "full"))


def test_commerce_suite_runs_and_writes_json(tmp_path):
    _, report = run_suite(tmp_path, "commerce", "--buyers", "20", "--attempts", "400", timeout=120)
    for backend in ("sqlite", "redis"):
        result = report["results"][backend]
        assert result["statuses"] == {"201": 200, "409": 200} and result["remaining"] == 0
        assert result["attempts_per_s"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]


def test_recs_suite_runs_and_writes_json_and_png(tmp_path):
    stdout, report = run_suite(tmp_path, "recs", "--users", "500", "--update-interval", "0.3", timeout=120)
    assert "HR@10" in stdout and (tmp_path / "recs.png").exists()
    for kind in ("stream", "product"):
        assert set(report["quality"][kind]) >= {"user", "item", "blend", "popular"}
    assert len(report["latency"]["event_to_change_seconds"]) == 5


def test_thumbnails_suite_runs_and_writes_json(tmp_path):
    _, report = run_suite(tmp_path, "thumbnails", "--rounds", "10", timeout=120)
    assert set(report["clips"]) == {"testsrc2 720p 2 Mb/s", "noisy 720p 8 Mb/s"}
    for figures in report["clips"].values():
        assert figures["cpu_s_per_thumbnail_mean"] > 0 and figures["jpeg_bytes"] > 0
    assert report["budget_core_fraction"] == 0.02


def test_events_suite_runs_over_both_paths_and_writes_json(tmp_path):
    """A small load (the goal is the bench's to report, not this test's: exit 0 or 1)."""
    for via, status in (("http", "202"), ("websocket", "101")):
        out = tmp_path / f"events-{via}.json"
        args = ["events", "--rate", "2000", "--seconds", "3", "--via", via, "--json", str(out)]
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.cli", *args], cwd=str(ROOT), capture_output=True, text=True, timeout=180
        )
        assert result.returncode in (0, 1), result.stderr[-2000:]
        report = json.loads(out.read_text())
        assert report["via"] == via and report["events_offered"] > 0
        assert report["events_accepted"] + report["events_dropped"] == report["events_offered"], report
        assert set(report["statuses"]) == {status}, report["statuses"]
        assert report["playlist_idle"]["requests"] > 0 and report["playlist_loaded"]["requests"] > 0


def test_events_loop_lag_writes_both_switch_intervals(tmp_path):
    _, report = run_suite(tmp_path, "events", "--loop-lag", "1", timeout=120)
    (row,) = report["rounds"]
    assert set(row) == {"5ms", "1ms"} and all(r["requests"] > 0 for r in row.values()), row
