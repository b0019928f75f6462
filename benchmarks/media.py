"""Generated test media, cached in a temp folder (never committed)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

MEDIA_DIR = Path(tempfile.gettempdir()) / "mediacore-test-media"


def make_clip(seconds: int = 10, fps: int = 30, gop_seconds: int = 2, name: str = "clip") -> Path:
    """720p H.264 High with B-frames + AAC 48 kHz stereo, 2 s GOP (testsrc2 + sine), as FLV."""
    MEDIA_DIR.mkdir(exist_ok=True)
    path = MEDIA_DIR / f"{name}-{seconds}s-{fps}fps-gop{gop_seconds}.flv"
    if path.exists() and path.stat().st_size > 0:
        return path
    tmp = path.with_suffix(f".{os.getpid()}.tmp.flv")
    gop = fps * gop_seconds
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=1280x720:rate={fps}",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            "high",
            "-bf",
            "2",
            "-g",
            str(gop),
            "-keyint_min",
            str(gop),
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            "2M",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ar",
            "48000",
            "-ac",
            "2",
            "-f",
            "flv",
            str(tmp),
        ],
        check=True,
    )
    tmp.rename(path)
    return path


def count_packets(path: Path) -> dict[str, int]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "stream=codec_type,nb_read_packets",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {s["codec_type"]: int(s["nb_read_packets"]) for s in json.loads(out)["streams"]}


ENCODERS = {"hevc": ("libx265",), "av1": ("libsvtav1", "libaom-av1")}
"""Debian's ffmpeg encoders for the Enhanced RTMP clips, in order of preference."""


def available_encoder(codec: str) -> str | None:
    """The first encoder of ENCODERS[codec] that the installed ffmpeg has."""
    listing = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], check=True, capture_output=True, text=True).stdout
    names = {line.split()[1] for line in listing.splitlines() if len(line.split()) > 1}
    return next((e for e in ENCODERS[codec] if e in names), None)


def make_coded_clip(codec: str, seconds: int = 2, fps: int = 30) -> Path:
    """A tiny 320x240 HEVC (libx265, with B-frames) or AV1 clip + AAC 48 kHz stereo, 1 s GOP,
    as MP4: what an Enhanced RTMP publisher remuxes (Debian's ffmpeg 5.1 cannot send it)."""
    MEDIA_DIR.mkdir(exist_ok=True)
    path = MEDIA_DIR / f"{codec}-{seconds}s-{fps}fps.mp4"
    if path.exists() and path.stat().st_size > 0:
        return path
    encoder = available_encoder(codec)
    if encoder is None:
        raise RuntimeError(f"ffmpeg has none of the {codec} encoders {ENCODERS[codec]}")
    if encoder == "libx265":
        video = [
            "-c:v",
            encoder,
            "-preset",
            "ultrafast",
            "-x265-params",
            f"keyint={fps}:min-keyint={fps}:bframes=2:log-level=error",
        ]
    elif encoder == "libsvtav1":
        video = ["-c:v", encoder, "-preset", "12", "-g", str(fps), "-svtav1-params", "scd=0"]
    else:
        video = ["-c:v", encoder, "-cpu-used", "8", "-usage", "realtime", "-g", str(fps), "-keyint_min", str(fps)]
    tmp = path.with_suffix(f".{os.getpid()}.tmp.mp4")
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size=320x240:rate={fps}",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            str(seconds),
            *video,
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-ac",
            "2",
            str(tmp),
        ],
        check=True,
        capture_output=True,
    )
    tmp.rename(path)
    return path
