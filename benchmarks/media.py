"""Generated test media, cached in a temp folder (never committed)."""

from __future__ import annotations

import json
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
    tmp = path.with_suffix(f".{id(path)}.tmp.flv")
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
