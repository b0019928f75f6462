"""`mediacore-bench thumbnails`: the CPU a stream's thumbnail costs.

A thumbnail is one keyframe decoded (PyAV H.264, one thread), scaled to [http]
thumbnail_width and encoded as JPEG (PyAV MJPEG), at most once per [http]
thumbnail_interval and only while someone asks for it. This suite runs exactly that
(`render_thumbnail`) on the keyframes of two 720p clips: the test clip (testsrc2, 2 Mb/s)
and a hard one (testsrc2 under heavy temporal noise, 8 Mb/s: keyframes several times larger,
as from a camera in poor light), and reports the CPU-seconds of one thumbnail and the
CPU-seconds per stream-second at the configured interval (the fraction of one core a watched
stream costs). Decoding runs on one thread, so process CPU time is the thumbnail's.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path

import av

from benchmarks.media import MEDIA_DIR, make_clip
from mediacore.model.media import Frame, Kind, Track
from mediacore.origin.config import HttpConfig
from mediacore.origin.thumbnails import render_thumbnail

BUDGET = 0.02
"""The most a watched stream's thumbnail may cost: 2 % of one core (issue 16's done-when)."""


def noisy_clip(seconds: int = 10) -> Path:
    """720p30, 2 s GOP, testsrc2 under strong per-frame noise at 8 Mb/s: large keyframes."""
    MEDIA_DIR.mkdir(exist_ok=True)
    path = MEDIA_DIR / f"noisy-{seconds}s-720p-8M.flv"
    if path.exists() and path.stat().st_size > 0:
        return path
    tmp = path.with_suffix(".tmp.flv")
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
        + ["-i", "testsrc2=size=1280x720:rate=30,noise=alls=40:allf=t+u", "-t", str(seconds)]
        + ["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-g", "60", "-keyint_min", "60"]
        + ["-sc_threshold", "0", "-pix_fmt", "yuv420p", "-b:v", "8M", "-maxrate", "8M", "-bufsize", "16M"]
        + ["-an", "-f", "flv", str(tmp)],
        check=True,
    )
    tmp.rename(path)
    return path


def clip_keyframes(clip: Path) -> list[Frame]:
    """The clip's video keyframes as the hub holds them (avcC config, AVCC NAL units)."""
    found = []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        track = Track(Kind.VIDEO, "h264", 90000, bytes(ctx.extradata or b""), "", ctx.width, ctx.height)
        for packet in container.demux(stream):
            if packet.size and packet.is_keyframe and packet.pts is not None:
                found.append(Frame(track, int(packet.pts) * 90, int(packet.pts) * 90, True, bytes(packet)))
    return found


def measure(keyframes: list[Frame], width: int, rounds: int) -> dict[str, float]:
    render_thumbnail(keyframes[0], width)  # warm up: codec tables, allocations
    times = []
    size = 0
    for i in range(rounds):
        frame = keyframes[i % len(keyframes)]
        start = time.process_time()
        size = len(render_thumbnail(frame, width))
        times.append(time.process_time() - start)
    return {
        "keyframe_bytes": round(statistics.mean(len(f.data) for f in keyframes)),
        "jpeg_bytes": size,
        "cpu_s_per_thumbnail_mean": statistics.mean(times),
        "cpu_s_per_thumbnail_p95": sorted(times)[int(len(times) * 0.95) - 1],
    }


def run(rounds: int, interval: float | None, width: int | None, out: Path | None) -> dict:
    defaults = HttpConfig()
    interval = interval or defaults.thumbnail_interval
    width = width or defaults.thumbnail_width
    report: dict = {"suite": "thumbnails", "interval_s": interval, "width": width, "rounds": rounds, "clips": {}}
    worst = 0.0
    for label, clip in (("testsrc2 720p 2 Mb/s", make_clip()), ("noisy 720p 8 Mb/s", noisy_clip())):
        figures = measure(clip_keyframes(clip), width, rounds)
        per_stream = figures["cpu_s_per_thumbnail_mean"] / interval
        figures["cpu_s_per_stream_s"] = per_stream
        figures["core_percent_per_watched_stream"] = 100 * per_stream
        worst = max(worst, per_stream)
        report["clips"][label] = {k: round(v, 6) if isinstance(v, float) else v for k, v in figures.items()}
        print(
            f"{label:<22} keyframe {figures['keyframe_bytes'] / 1000:6.1f} kB"
            f" -> JPEG {figures['jpeg_bytes'] / 1000:4.1f} kB:"
            f" {figures['cpu_s_per_thumbnail_mean'] * 1000:6.2f} ms CPU per thumbnail"
            f" (p95 {figures['cpu_s_per_thumbnail_p95'] * 1000:.2f} ms),"
            f" {per_stream:.5f} CPU-s per stream-second = {100 * per_stream:.3f} % of a core at {interval:g} s"
        )
    report["worst_core_fraction"] = round(worst, 6)
    report["budget_core_fraction"] = BUDGET
    report["within_budget"] = worst < BUDGET
    print(f"worst: {100 * worst:.3f} % of a core per watched stream (budget {100 * BUDGET:g} %)")
    print("a stream nobody asks about costs nothing: no decode runs for it")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        print(f"results: {out}")
    return report
