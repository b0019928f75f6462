"""Opus -> AAC for HLS: HLS players (and MPEG-TS) carry AAC, WebRTC-style senders send Opus.

`OpusToAac` is the synchronous core (PyAV's native Opus decoder and AAC encoder, 48 kHz
stereo in both); `ThreadedTranscoder` runs it on one worker thread so the event loop never
decodes or encodes (PyAV releases the GIL inside libavcodec) and hands results back with
call_soon_threadsafe.

Timing: each Opus packet comes with its presentation time (48 kHz ticks). Decoded samples go
into one continuous buffer that is cut into the AAC encoder's 1024-sample frames, so output
timestamps stay on the sample grid. A gap (lost packets) shorter than `max_gap` is filled with
silence; a longer one, or a jump backwards, restarts the buffer at the new time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Any, Generic, Protocol, TypeVar

import av
import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
AAC_FRAME = 1024
_TIME_BASE = Fraction(1, SAMPLE_RATE)
Out = TypeVar("Out")


class TranscodeError(Exception):
    """The decoder rejected a packet."""


class OpusToAac:
    def __init__(self, bitrate: int = 128_000, max_gap: float = 1.0) -> None:
        self.decoder = av.CodecContext.create("opus", "r")
        self.decoder.sample_rate = SAMPLE_RATE
        self.decoder.layout = "stereo"
        self.encoder = av.CodecContext.create("aac", "w")
        self.encoder.sample_rate = SAMPLE_RATE
        self.encoder.layout = "stereo"
        self.encoder.format = "fltp"
        self.encoder.bit_rate = bitrate
        self.encoder.time_base = _TIME_BASE
        self.encoder.open()
        self.config = bytes(self.encoder.extradata or b"")  # AudioSpecificConfig
        self.max_gap = round(max_gap * SAMPLE_RATE)
        self._buffer = np.zeros((2, 0), dtype=np.float32)
        self._buffer_pts: int | None = None  # presentation time of _buffer[:, 0]
        self.gaps_filled = 0
        self.restarts = 0
        self.decode_errors = 0

    def push(self, pts: int, packet: bytes) -> list[tuple[int, bytes]]:
        """One Opus packet at `pts` (48 kHz) -> zero or more (pts, raw AAC frame)."""
        av_packet = av.Packet(packet)
        av_packet.pts = pts
        av_packet.time_base = _TIME_BASE
        try:
            frames = self.decoder.decode(av_packet)
        except av.error.FFmpegError as e:
            self.decode_errors += 1
            raise TranscodeError(f"Opus packet rejected by the decoder: {e}") from e
        out: list[tuple[int, bytes]] = []
        for frame in frames:
            samples: np.ndarray = frame.to_ndarray()
            if not frame.format.is_planar:
                samples = samples.reshape(-1, len(frame.layout.channels)).T
            if samples.shape[0] == 1:
                samples = np.repeat(samples, 2, axis=0)
            out += self._add(pts, samples[:2].astype(np.float32, copy=False))
            pts += samples.shape[1]
        return out

    def _add(self, pts: int, samples: np.ndarray) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        if self._buffer_pts is None:
            self._buffer_pts = pts
        expected = self._buffer_pts + self._buffer.shape[1]
        gap = pts - expected
        if gap > 0:
            if gap <= self.max_gap:
                self.gaps_filled += 1
                self._buffer = np.concatenate([self._buffer, np.zeros((2, gap), dtype=np.float32)], axis=1)
            else:
                out += self._restart(pts)
        elif gap < 0:
            if -gap >= samples.shape[1] and -gap <= self.max_gap:
                return out  # already covered (a duplicate)
            if -gap > self.max_gap:
                out += self._restart(pts)
            else:
                samples = samples[:, -gap:]
        self._buffer = np.concatenate([self._buffer, samples], axis=1)
        while self._buffer.shape[1] >= AAC_FRAME:
            out += self._encode(self._buffer[:, :AAC_FRAME])
            self._buffer = self._buffer[:, AAC_FRAME:]
            self._buffer_pts += AAC_FRAME
        return out

    def _restart(self, pts: int) -> list[tuple[int, bytes]]:
        """A long gap or a jump backwards: finish what is buffered, start again at pts."""
        self.restarts += 1
        out = self._pad_and_encode()
        self._buffer = np.zeros((2, 0), dtype=np.float32)
        self._buffer_pts = pts
        return out

    def _pad_and_encode(self) -> list[tuple[int, bytes]]:
        if self._buffer.shape[1] == 0:
            return []
        padded = np.zeros((2, AAC_FRAME), dtype=np.float32)
        padded[:, : self._buffer.shape[1]] = self._buffer
        return self._encode(padded)

    def _encode(self, samples: np.ndarray) -> list[tuple[int, bytes]]:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._buffer_pts
        frame.time_base = _TIME_BASE
        return [(int(p.pts), bytes(p)) for p in self.encoder.encode(frame) if p.pts is not None]

    def flush(self) -> list[tuple[int, bytes]]:
        """The publisher left: encode what is buffered and drain the encoder."""
        out = self._pad_and_encode()
        self._buffer = np.zeros((2, 0), dtype=np.float32)
        out += [(int(p.pts), bytes(p)) for p in self.encoder.encode(None) if p.pts is not None]
        return out


class TranscoderCore(Protocol[Out]):
    """What ThreadedTranscoder runs: a synchronous core whose push() turns one input into
    zero or more outputs and whose flush() drains it (OpusToAac, H264Repair)."""

    decode_errors: int

    def push(self, *args: Any, **kwargs: Any) -> list[Out]: ...

    def flush(self) -> list[Out]: ...


class ThreadedTranscoder(Generic[Out]):
    """Runs a transcoder core on one worker thread, in order, bounded in backlog."""

    def __init__(
        self,
        core: TranscoderCore[Out],
        on_output: Callable[[list[Out]], None],
        max_backlog: int = 250,
        name: str = "Opus transcoder",
    ) -> None:
        """`max_backlog`: inputs waiting at most (Opus: 250 x 20 ms = 5 s of audio); past it
        submit() refuses them. `name`: how log lines call it."""
        self.core = core
        self.on_output = on_output
        self.max_backlog = max_backlog
        self.name = name
        self.backlog = 0
        self.dropped = 0
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transcode")
        self._closed = False

    def submit(self, *args: Any) -> bool:
        """Queue core.push(*args); False if it was dropped (closed, or the backlog is full)."""
        if self._closed:
            return False
        if self.backlog >= self.max_backlog:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:
                log.warning("%s is behind: %d inputs dropped", self.name, self.dropped)
            return False
        self.backlog += 1
        self._executor.submit(self._run, self.core.push, *args)
        return True

    def _run(self, fn: Callable[..., list[Out]], *args: object) -> None:
        try:
            out = fn(*args)
        except TranscodeError as e:
            out = []
            if self.core.decode_errors & (self.core.decode_errors - 1) == 0:
                log.warning("%s (%d so far)", e, self.core.decode_errors)
        except Exception:  # the worker must never die silently
            log.exception("%s failed", self.name)
            out = []
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, out, bool(args))

    def _deliver(self, out: list[Out], counted: bool) -> None:
        if counted:
            self.backlog -= 1
        if out:
            self.on_output(out)

    def close(self) -> None:
        """Flush the encoder (its output is still delivered) and let the thread end."""
        if self._closed:
            return
        self._closed = True
        self._executor.submit(self._run, self.core.flush)
        self._executor.shutdown(wait=False)
