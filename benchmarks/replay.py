"""`mediacore-bench replay`: the ingest -> HLS + LL-HLS path's CPU per stream-second, in one
process and without sockets, so it resolves changes that `mediacore-bench ingest` cannot on
a busy machine (no kernel, no other processes' cache traffic, no ffmpeg beside it).

One real-time ffmpeg push of the bench clip is recorded once, read by read, answered by the
RTMP core (ServerSession), and cached beside the clip. A replay feeds those reads, at their
recorded pace times `speed`, to N RtmpConnection objects of an in-process Engine (each
publishing its own stream name), and divides the process CPU time (event loop and mux
threads) by N x the recorded seconds.
"""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.ingest import push_cmd
from benchmarks.media import MEDIA_DIR, make_clip
from ingest.rtmp.server import RtmpConnection
from ingest.rtmp.session import PublishRequest, ServerSession
from mediacore.app.config import load_config
from mediacore.app.engine import Engine

RECORDED_NAME = b"\x02\x00\x01x"
"""The AMF0 string of the recorded stream name, "x": one character, so a replay can put
another one-character name in its place without changing any length."""
NAMES = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
SETUP_READS = 20
"""Reads at the start that may carry the name (handshake, connect, publish)."""
_READ = struct.Struct(">dI")  # recorded file: (seconds since the first read, length) + bytes


@dataclass
class ReplayResult:
    streams: int
    media_seconds: float
    cpu_seconds: float
    ms_per_stream_second: float


async def _record(clip: Path, seconds: float) -> list[tuple[float, bytes]]:
    reads: list[tuple[float, bytes]] = []
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ServerSession()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            data = await reader.read(65536)
            if not data:
                break
            reads.append((time.monotonic() - start, data))
            for event in session.receive_data(data, time.monotonic()):
                if isinstance(event, PublishRequest):
                    session.accept_publish()
            out = session.data_to_send()
            if out:
                writer.write(out)
        writer.close()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pusher = subprocess.Popen(
        push_cmd(clip, f"rtmp://127.0.0.1:{port}/live/x"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await asyncio.wait_for(done.wait(), seconds + 30)
    finally:
        pusher.terminate()
        pusher.wait(5)
        server.close()
    return reads


def recording(seconds: float) -> list[tuple[float, bytes]]:
    """The recorded push of `seconds` (made once, then read from the media folder)."""
    clip = make_clip(10)
    path = MEDIA_DIR / f"rtmp-push-{clip.stem}-{seconds:g}s.bin"
    if not path.exists():
        reads = asyncio.run(_record(clip, seconds))
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(_READ.pack(at, len(data)) + data for at, data in reads))
        tmp.rename(path)
    blob = path.read_bytes()
    reads, pos = [], 0
    while pos < len(blob):
        at, size = _READ.unpack_from(blob, pos)
        pos += _READ.size
        reads.append((at, blob[pos : pos + size]))
        pos += size
    return reads


class _Transport(asyncio.Transport):
    """Accepts and drops what the server writes; reports a loopback peer."""

    def __init__(self) -> None:
        super().__init__()
        self._closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1935) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True


async def _replay(reads: list[tuple[float, bytes]], streams: int, speed: float) -> ReplayResult:
    engine = Engine(load_config())
    engine.rtmp.config.max_connections_per_ip = streams
    connections = []
    for letter in NAMES[:streams]:
        connection = RtmpConnection(engine.rtmp)
        connection.connection_made(_Transport())
        connections.append((connection, RECORDED_NAME[:3] + letter.encode()))
    cpu, start = time.process_time(), time.monotonic()
    for i, (at, data) in enumerate(reads):
        delay = start + at / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for connection, name in connections:
            connection.data_received(data.replace(RECORDED_NAME, name) if i < SETUP_READS else data)
        if i < SETUP_READS:
            await asyncio.sleep(0.01)  # the publish decision is a task
    await asyncio.sleep(0.5)  # the last segments are muxed
    used = time.process_time() - cpu
    for connection, _ in connections:
        connection.connection_lost(None)
    await engine.stop()
    media = reads[-1][0]
    return ReplayResult(streams, round(media, 2), round(used, 3), round(used / (streams * media) * 1000, 3))


def run(streams: int, seconds: float, speed: float, runs: int, out: Path | None) -> dict:
    import uvloop

    if not 1 <= streams <= len(NAMES):
        raise SystemExit(f"--streams must be 1 to {len(NAMES)}")
    reads = recording(seconds)
    results = [uvloop.run(_replay(reads, streams, speed)) for _ in range(runs)]
    for r in results:
        print(
            f"{r.streams} streams x {r.media_seconds:g} s: {r.cpu_seconds:.3f} CPU-s,"
            f" {r.ms_per_stream_second:.2f} ms per stream-second"
        )
    best = min(r.ms_per_stream_second for r in results)
    print(f"best of {runs}: {best:.2f} ms per stream-second")
    report = {"suite": "replay", "speed": speed, "results": [asdict(r) for r in results], "best": best}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"results written to {out}")
    return report
