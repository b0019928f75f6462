"""`mediacore-bench ingest` runs end to end and reports figures (not a speed assertion)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.peers import nginx_rtmp_module
from conftest import ROOT

pytestmark = pytest.mark.slow


def test_ingest_suite_runs_and_writes_json(tmp_path):
    out = tmp_path / "ingest.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "ingest", "--streams", "2", "--seconds", "4", "--warmup", "3",
         "--json", str(out)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "CPU s/stream-s" in result.stdout
    report = json.loads(out.read_text())
    ours = report["results"][0]
    assert ours["server"] == "mediacore" and ours["streams_live"] == 2
    assert ours["cpu_per_stream_second"] > 0
    if nginx_rtmp_module() is not None:
        assert report["results"][1]["server"] == "nginx-rtmp"
        assert report["results"][1]["streams_live"] == 2
        assert "streams_per_core_vs_nginx" in report


def test_latency_suite_runs_and_writes_json(tmp_path):
    out = tmp_path / "latency.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "latency", "--seconds", "12", "--json", str(out)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hls.js LL-HLS: latency (median)" in result.stdout
    report = json.loads(out.read_text())
    assert report["hlsjs_ll"]["fatal"] is None
    assert report["player_client"]["parts"] > 20
    assert report["blocked_response"]["playlist_p99_s_at_most"] is not None


def test_fanout_suite_runs_and_writes_json_and_png(tmp_path):
    out = tmp_path / "fanout.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "fanout", "--edges", "2", "--tiers", "2", "--viewers", "20",
         "--seconds", "8", "--json", str(out)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["viewers"]["started"] == 20
    assert report["origin_requests"] < report["viewer_requests"] / 5  # the edges absorbed the load
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_edge_suite_runs_and_writes_json(tmp_path):
    out = tmp_path / "edge.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "edge", "--seconds", "2", "--connections", "10", "--viewers", "20",
         "--json", str(out)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["segment"]["mediacore-edge"]["requests_per_s"] > 0
    assert report["segment"]["mediacore-edge"]["non_2xx"] == 0
    assert report["ll_viewers"]["viewers"]["started"] == 20


def test_rtp_suite_runs_and_writes_json(tmp_path):
    out = tmp_path / "rtp.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "rtp", "--packets", "20000", "--json", str(out)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["packets"] > 19000 and report["parse (mediacore)"] > 0
