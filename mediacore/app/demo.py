"""The built-in demo publisher: a test pattern with a burned-in wall clock and a tone,
encoded with PyAV (libx264 High with B-frames, AAC) and pushed over RTMP in real time.

It runs as its own process (`python -m mediacore.app.demo URL`): encoding is CPU work, and
libavformat's RTMP client blocks holding the GIL, which must never stall the server's event
loop. It reconnects if the server goes away. The clock is UTC with milliseconds, so a screenshot of a
player next to a clock shows end-to-end latency.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from fractions import Fraction

import av
import numpy as np

from mediacore.app.config import DemoConfig
from mediacore.model.names import without_query

log = logging.getLogger("mediacore.app.demo")

# 5x7 bitmaps for the clock's characters.
_GLYPHS = {
    "0": ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    "1": ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    "2": ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    "3": ["11111", "00010", "00100", "00010", "00001", "10001", "01110"],
    "4": ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    "5": ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    "6": ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    "7": ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    "8": ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    "9": ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
    ":": ["00000", "01100", "01100", "00000", "01100", "01100", "00000"],
    ".": ["00000", "00000", "00000", "00000", "00000", "01100", "01100"],
    " ": ["00000"] * 7,
}
_GLYPH_ARRAYS = {c: np.array([[int(b) for b in row] for row in rows], dtype=bool) for c, rows in _GLYPHS.items()}


def draw_text(picture: np.ndarray, text: str, x: int, y: int, scale: int) -> None:
    """Draw white text on a black box into a yuv420p picture (PyAV's (h*3/2, w) layout)."""
    height = picture.shape[0] * 2 // 3
    width = picture.shape[1]
    luma = picture[:height]
    h = 7 * scale
    w = 6 * scale * len(text)
    y0, y1, x0, x1 = max(0, y - scale), y + h + scale, max(0, x - scale), x + w
    luma[y0:y1, x0:x1] = 16
    quarter = height // 4
    for plane in (picture[height : height + quarter], picture[height + quarter : height + 2 * quarter]):
        plane.reshape(height // 2, width // 2)[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = 128
    for i, ch in enumerate(text):
        glyph = np.kron(_GLYPH_ARRAYS.get(ch, _GLYPH_ARRAYS[" "]), np.ones((scale, scale), dtype=bool))
        region = luma[y : y + h, x + i * 6 * scale : x + i * 6 * scale + 5 * scale]
        region[glyph[: region.shape[0], : region.shape[1]]] = 235


def clock_text(now: float) -> str:
    t = datetime.fromtimestamp(now, UTC)
    return t.strftime("%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


class DemoPublisher:
    def __init__(self, url: str, config: DemoConfig) -> None:
        self.url = url
        self.config = config
        self._stop = threading.Event()
        self.frames_sent = 0

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self._publish_once()
            except (av.FFmpegError, OSError) as e:
                if self._stop.is_set():
                    break
                log.warning("demo publisher: %s; retrying in 1 s", without_query(str(e)))  # the URL holds the key
                self._stop.wait(1.0)

    def _publish_once(self) -> None:
        cfg = self.config
        source = av.open(f"testsrc2=size={cfg.width}x{cfg.height}:rate={cfg.fps}", format="lavfi")
        out = av.open(self.url, "w", format="flv")
        try:
            video = out.add_stream("libx264", rate=cfg.fps)
            video.width = cfg.width
            video.height = cfg.height
            video.pix_fmt = "yuv420p"
            video.bit_rate = cfg.video_bitrate
            gop = max(1, round(cfg.gop_seconds * cfg.fps))
            video.options = {
                "preset": "superfast",
                "profile": "high",
                "g": str(gop),
                "keyint_min": str(gop),
                "sc_threshold": "0",
                "bf": "2",
            }
            audio = out.add_stream("aac", rate=48000)
            audio.layout = "stereo"
            audio.bit_rate = cfg.audio_bitrate
            self._pump(source, out, video, audio)
        finally:
            source.close()
            out.close()

    def _pump(
        self,
        source: av.container.InputContainer,
        out: av.container.OutputContainer,
        video: av.VideoStream,
        audio: av.AudioStream,
    ) -> None:
        cfg = self.config
        rate = 48000
        samples_per_frame = 1024
        audio_pts = 0
        start = time.monotonic()
        scale = max(2, cfg.height // 90)
        tone = 2 * np.pi * 440.0 / rate
        for index, frame in enumerate(source.decode(video=0)):
            if self._stop.is_set():
                break
            due = start + index / cfg.fps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            picture = frame.to_ndarray(format="yuv420p")
            draw_text(picture, clock_text(time.time()), scale * 4, scale * 4, scale)
            out_frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
            out_frame.pts = index
            out_frame.time_base = Fraction(1, cfg.fps)
            for packet in video.encode(out_frame):
                out.mux(packet)
            self.frames_sent += 1
            # Audio up to the video clock: a 440 Hz tone with a beep every second.
            while audio_pts < (index + 1) * rate // cfg.fps:
                t = np.arange(audio_pts, audio_pts + samples_per_frame)
                level = np.where((t % rate) < rate // 10, 0.3, 0.05).astype(np.float32)
                wave = (np.sin(tone * t) * level).astype(np.float32)
                samples = np.vstack([wave, wave])
                aframe = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
                aframe.sample_rate = rate
                aframe.pts = audio_pts
                aframe.time_base = Fraction(1, rate)
                for packet in audio.encode(aframe):
                    out.mux(packet)
                audio_pts += samples_per_frame


def demo_command(url: str, config: DemoConfig) -> list[str]:
    """The command line that runs a demo publisher process."""
    return [
        sys.executable,
        "-m",
        "mediacore.app.demo",
        url,
        "--width",
        str(config.width),
        "--height",
        str(config.height),
        "--fps",
        str(config.fps),
        "--gop",
        str(config.gop_seconds),
        "--video-bitrate",
        str(config.video_bitrate),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mediacore.app.demo", description="push the demo pattern over RTMP")
    defaults = DemoConfig()
    parser.add_argument("url")
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--fps", type=int, default=defaults.fps)
    parser.add_argument("--gop", type=float, default=defaults.gop_seconds)
    parser.add_argument("--video-bitrate", type=int, default=defaults.video_bitrate)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = DemoConfig(
        width=args.width, height=args.height, fps=args.fps, gop_seconds=args.gop, video_bitrate=args.video_bitrate
    )
    publisher = DemoPublisher(args.url, config)
    signal.signal(signal.SIGTERM, lambda *_: publisher.stop())
    signal.signal(signal.SIGINT, lambda *_: publisher.stop())
    publisher.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
