"""A UDP impairment relay for tests: what a bad network does to RTP, seeded and logged.

RtpImpairmentRelay forwards one RTP flow with loss, duplication, adjacent reordering and
jitter (a FIFO delay line, as netem does without reordering: jitter only delays) and logs
the sequence numbers it actually sent, so a test can compute what a receiver must count.
RtcpRelay forwards the sender's RTCP unchanged and records what the receiver sends back.

`send_impaired_rtp` starts the real ffmpeg sending the test clip as raw RTP through those
relays to a raw RTP input; `video_frames` reads what Chromium decoded from play.mjs's
report; `poll_playlist` / `poll_ll_playlists` check the playlists' rules on every reload.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import struct
import subprocess
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from conftest import ffmpeg_push_cmd, make_clip, require_tool, start_process, stop_process
from hls_rules import PlaylistHistory

from ingest.rtp.raw import RawRtpInput
from ingest.rtp.sdp import parse_sdp
from ingest.rtp.udp_buffer import widen_receive_buffer
from mediacore.app.engine import Engine
from mediacore.model.timebase import round_half_up
from mediacore.playlist.media import MediaPlaylist


@dataclass
class Expected:
    """What a receiver should count for the flow the relay delivered."""

    lost: int
    duplicates: int
    reordered: int
    delivered: int
    lost_sequences: set[int] = field(default_factory=set)


class RtpImpairmentRelay(asyncio.DatagramProtocol):
    def __init__(
        self,
        target: tuple[str, int],
        loss: float = 0.02,
        duplicate: float = 0.01,
        reorder: float = 0.05,
        jitter: float = 0.030,
        seed: int = 1,
        clean_start: int = 10,
    ) -> None:
        self.target = target
        self.loss, self.duplicate, self.reorder, self.jitter = loss, duplicate, reorder, jitter
        self.rng = random.Random(seed)
        self.clean_start = clean_start  # the first packets pass untouched: they start the receiver's window
        self.received = 0
        self.last_received = 0.0  # loop time of the latest datagram from the sender
        self.dropped: list[int] = []
        self.duplicated = 0
        self.swapped = 0
        self.sent: list[int] = []  # 16-bit sequence numbers in the order they were sent
        self.sent_types: list[int] = []  # their payload types (a retransmission stream has its own)
        self.dropped_types: list[int] = []  # the payload types of the dropped packets
        self._held: bytes | None = None
        self._line: deque[tuple[float, bytes]] = deque()
        self._last_due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # As wide as the server's: the loss this relay counts must be the only loss.
        widen_receive_buffer(transport.get_extra_info("socket"))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        self.last_received = asyncio.get_running_loop().time()
        if self.received <= self.clean_start:
            self._emit(data)
            return
        roll = self.rng.random()
        if roll < self.loss:
            self.dropped.append(struct.unpack_from(">H", data, 2)[0])
            self.dropped_types.append(data[1] & 0x7F)
        elif roll < self.loss + self.duplicate:
            self.duplicated += 1
            self._emit(data)
            self._emit(data)
        elif roll < self.loss + self.duplicate + self.reorder and self._held is None:
            self.swapped += 1
            self._held = data  # goes out right after the next packet
            return
        else:
            self._emit(data)
        if self._held is not None and roll >= self.loss:
            held, self._held = self._held, None
            self._emit(held)

    def _emit(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        due = max(self._last_due, loop.time() + self.rng.uniform(0.0, self.jitter))
        self._last_due = due
        self._line.append((due, data))
        if self._timer is None:
            self._timer = loop.call_at(due, self._release)

    def connection_lost(self, exc: Exception | None) -> None:
        """Closed: what is still in line is not sent, and no timer fires on a closed socket."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._line.clear()

    def _release(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        now = loop.time()
        while self._line and self._line[0][0] <= now:
            _, data = self._line.popleft()
            self.sent.append(struct.unpack_from(">H", data, 2)[0])
            self.sent_types.append(data[1] & 0x7F)
            assert self.transport is not None
            self.transport.sendto(data, self.target)
        if self._line:
            self._timer = loop.call_at(self._line[0][0], self._release)

    def expected(self, payload_type: int | None = None) -> Expected:
        """Counters by definition, from the log of what was sent (of one payload type: a
        retransmission stream numbers its packets apart)."""
        seen: set[int] = set()
        highest = None
        duplicates = reordered = 0
        ext = None
        sent = [s for s, t in zip(self.sent, self.sent_types) if payload_type in (None, t)]
        for seq in sent:
            ext = seq if ext is None else ext + ((seq - ext + 0x8000) & 0xFFFF) - 0x8000
            if ext in seen:
                duplicates += 1
                continue
            seen.add(ext)
            if highest is not None and ext < highest:
                reordered += 1
            highest = ext if highest is None else max(highest, ext)
        lost_ext = set(range(min(seen), max(seen) + 1)) - seen if seen else set()
        return Expected(len(lost_ext), duplicates, reordered, len(seen), {s & 0xFFFF for s in lost_ext})


class RtcpRelay(asyncio.DatagramProtocol):
    """Sender -> receiver unchanged; receiver -> sender recorded (NACKs, receiver reports),
    and sent back to where the sender's RTCP came from, or to `reply_to` (a sender that
    reads RTCP on another port than it sends from, as gst-launch's udpsrc/udpsink pairs)."""

    def __init__(self, target: tuple[str, int], reply_to: tuple[str, int] | None = None) -> None:
        self.target = target
        self.reply_to = reply_to
        self.sender: tuple[str, int] | None = None
        self.from_receiver: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr == self.target:
            self.from_receiver.append(data)
            back = self.reply_to or self.sender
            if back is not None:
                self.transport.sendto(data, back)
        else:
            self.sender = addr
            self.transport.sendto(data, self.target)


FPS = 30  # make_clip()'s frame rate: frames sent in a window = FPS x its seconds
BENIGN_MEDIA_ERRORS = {
    "bufferStalledError",
    "bufferNudgeOnStall",
    "bufferSeekOverHole",
    "fragGap",
    "bufferAppendNoProgress",
}
"""hls.js media errors a live player raises while it waits for data, steps over a GAP part
or a hole, or appends a segment that adds nothing to the buffered range (the audio-only
segments cut while video waits for a keyframe; hls.js's error controller does nothing about
it). Fatal only as bufferSeekOverHole after hls.js failed to move the playhead past holes
again and again, which the watch page recovers from and play_in_browser reports as fatal
unless a test allows recovery. Any other media error (bufferAppendingError,
mediaSourceRequiresReset: what a decoder failure becomes), or an error on the video element,
fails the test."""
MAX_PLAYBACK_RATE = 1.6
"""Playhead seconds per wall-clock second above which an interval between two readings held
a seek, not playback: hls.js plays LL-HLS up to 1.5x to catch up with the live edge
(watch.js's maxLiveSyncPlaybackRate), and skips ahead when it falls too far behind."""


def _readings(name: str, report: dict) -> list[dict]:
    """play.mjs's readings from the start of playback to the end, once it is checked that
    the page played without a fatal error, a decoder or MSE error, or a video element error."""
    assert report["started"] and report["fatal"] is None, (name, report)
    errors = report["errors"]
    media_errors = [e for e in errors if e["type"] == "mediaError" and e["details"] not in BENIGN_MEDIA_ERRORS]
    assert media_errors == [] and report["end"]["mediaError"] is None, (name, media_errors, report["end"])
    return [report["start"], *report["samples"], report["end"]]


def video_frames(name: str, report: dict) -> tuple[int, float, float]:
    """Chromium decoded what hls.js gave it without a decoder or MSE error; returns (frames
    decoded, frames sent, longest freeze in seconds) between the first and the last reading
    of `getVideoPlaybackQuality().totalVideoFrames`. Frames sent are FPS x the wall-clock
    time between them; a freeze is the time from the first reading of a frame count to the
    first reading of a higher one (an overestimate by up to play.mjs's 1 s sampling)."""
    readings = _readings(name, report)
    decoded = readings[-1]["frames"] - readings[0]["frames"]
    sent = FPS * (readings[-1]["wall"] - readings[0]["wall"])
    longest = 0.0
    since = readings[0]
    for reading in readings[1:]:
        if reading["frames"] > since["frames"]:
            longest = max(longest, reading["wall"] - since["wall"])
            since = reading
    longest = max(longest, readings[-1]["wall"] - since["wall"])
    return decoded, sent, longest


def playhead_frames(name: str, report: dict) -> tuple[int, float]:
    """(frames decoded, frames under the playhead) summed over the intervals between
    play.mjs's readings in which the player played: an interval holding a seek (a skip ahead,
    hls.js's or the watch page's catch-up jump to the live edge) decodes nothing of what it
    skipped, which is the player's choice, not frames the stream lacked. Same checks as
    `video_frames`."""
    readings = _readings(name, report)
    decoded, shown = 0, 0.0
    for a, b in zip(readings, readings[1:]):
        played = b["t"] - a["t"]
        caught_up = b.get("catchUps", 0) != a.get("catchUps", 0)  # the watch page jumped ahead
        if not caught_up and 0 <= played <= MAX_PLAYBACK_RATE * (b["wall"] - a["wall"]) + 0.1:
            decoded += b["frames"] - a["frames"]
            shown += FPS * played
    return decoded, shown


def free_udp_pair() -> int:
    """An even port whose successor is free too (RTP + RTCP)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1] & ~1
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            a.bind(("127.0.0.1", port))
            b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
        finally:
            a.close()
            b.close()
    raise RuntimeError("no free UDP port pair")


def ffmpeg_sdp(clip, tmp_path) -> str:
    """The SDP ffmpeg writes for this clip (a short dry run to the discard port)."""
    path = tmp_path / "probe.sdp"
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(clip),
            "-t",
            "0.2",
            "-map",
            "0:v",
            "-c",
            "copy",
            "-f",
            "rtp",
            "rtp://127.0.0.1:9",
            "-map",
            "0:a",
            "-c",
            "copy",
            "-f",
            "rtp",
            "rtp://127.0.0.1:9",
            "-sdp_file",
            str(path),
        ],
        check=True,
        timeout=30,
    )
    return path.read_text()


@dataclass
class ImpairedSender:
    """ffmpeg sending the test clip as raw RTP through impairment relays to a raw RTP input."""

    input: RawRtpInput
    relays: dict[str, RtpImpairmentRelay]
    rtcp_relays: dict[str, RtcpRelay]
    transports: list[asyncio.DatagramTransport]
    pusher: asyncio.subprocess.Process

    async def close(self) -> None:
        await stop_process(self.pusher)
        for t in self.transports:
            t.close()


async def send_impaired_rtp(
    engine: Engine, name: str, tmp_path: Path, repair_bitrate: int | None = None
) -> ImpairedSender:
    """A raw RTP input `name` (video repaired at `repair_bitrate` if given) and ffmpeg
    sending 40 s of make_clip() to it through an RtpImpairmentRelay per track (seeded 1 for
    video, 2 for audio) and an RtcpRelay beside each: the stream outlasts 21 s of playback
    even when a browser joins late."""
    require_tool("ffmpeg")
    clip = make_clip()
    loop = asyncio.get_running_loop()
    ports = {"video": free_udp_pair(), "audio": free_udp_pair()}
    text = ffmpeg_sdp(clip, tmp_path)
    text = re.sub(r"^m=(video|audio) \d+", lambda m: f"m={m.group(1)} {ports[m.group(1)]}", text, flags=re.M)
    rtp_input = await engine.add_rtp_input(name, parse_sdp(text), repair_bitrate)
    relays: dict[str, RtpImpairmentRelay] = {}
    rtcp_relays: dict[str, RtcpRelay] = {}
    relay_ports = {}
    transports = []
    for seed, kind in enumerate(("video", "audio")):
        relay = RtpImpairmentRelay(("127.0.0.1", ports[kind]), seed=seed + 1)
        t, _ = await loop.create_datagram_endpoint(lambda r=relay: r, local_addr=("127.0.0.1", 0))
        rtcp = RtcpRelay(("127.0.0.1", ports[kind] + 1))
        t2, _ = await loop.create_datagram_endpoint(lambda r=rtcp: r, local_addr=("127.0.0.1", 0))
        transports += [t, t2]
        relays[kind], rtcp_relays[kind] = relay, rtcp
        relay_ports[kind] = (t.get_extra_info("sockname")[1], t2.get_extra_info("sockname")[1])
    outputs = []
    for kind, stream in (("video", "0:v"), ("audio", "0:a")):
        rtp_port, rtcp_port = relay_ports[kind]
        outputs += ["-map", stream, "-c", "copy", "-f", "rtp", f"rtp://127.0.0.1:{rtp_port}?rtcpport={rtcp_port}"]
    pusher = await start_process(*ffmpeg_push_cmd(clip, "", loops=3, output=outputs))
    return ImpairedSender(rtp_input, relays, rtcp_relays, transports, pusher)


async def poll_playlist(url: str, history: PlaylistHistory, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            async with session.get(url) as resp:
                history.add(await resp.text())
            await asyncio.sleep(0.5)


async def poll_ll_playlists(base: str, stop: asyncio.Event) -> list[str]:
    """LL-HLS renditions under loss: parts within PART-TARGET (L5), parents within
    TARGETDURATION (T2), every video parent starting with an independent part (E3)."""
    problems: list[str] = []
    reloads = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            for name in ("video", "audio"):
                async with session.get(f"{base}/ll/{name}.m3u8") as resp:
                    pl = MediaPlaylist.parse(await resp.text())
                reloads += 1
                for seg in pl.segments:
                    if seg.uri is not None and round_half_up(seg.duration) > pl.target_duration:
                        problems.append(
                            f"{name} T2: segment {seg.msn} of {seg.duration} s, TARGETDURATION {pl.target_duration}"
                        )
                    problems += [
                        f"{name} L5: part of {p.duration} s" for p in seg.parts if p.duration > pl.part_target + 1e-6
                    ]
                    gaps = [p.gap for p in seg.parts]
                    if any(gaps) and not all(gaps) or (seg.uri is not None and seg.parts and seg.gap != all(gaps)):
                        problems.append(f"{name}: segment {seg.msn} mixes GAP and media parts")
                    if (
                        name == "video"
                        and seg.parts
                        and not seg.parts[0].gap
                        and seg.parts[0].uri.endswith(".0.m4s")
                        and not seg.parts[0].independent
                    ):
                        problems.append(f"video E3: segment {seg.msn} starts without an IDR")
            await asyncio.sleep(0.5)
    assert reloads >= 20
    return sorted(set(problems))
