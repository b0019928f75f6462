"""Opus RTP payloads (RFC 7587) and the Opus -> AAC transcoder, on packets made by libopus."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import numpy as np
import pytest

from ingest.rtp.depacketize import OpusDepacketizer, opus_packet_samples
from ingest.rtp.errors import RtpError
from ingest.rtp.packet import RtpPacket
from ingest.rtp.transcode import OpusToAac, ThreadedTranscoder, TranscodeError
from mediacore.model.aac import parse_asc


def opus_packets(seconds: float = 1.0, frequency: float = 440.0) -> list[tuple[int, bytes]]:
    """(pts, packet) at 48 kHz from libopus: 20 ms packets of a stereo sine."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.time_base = 48000, "stereo", "s16", Fraction(1, 48000)
    enc.open()
    n = int(48000 * seconds)
    tone = (np.sin(2 * np.pi * frequency * np.arange(n) / 48000) * 12000).astype(np.int16)
    interleaved = np.repeat(tone, 2).reshape(1, -1)
    out = []
    for i in range(0, n - 960 + 1, 960):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(interleaved[:, 2 * i : 2 * (i + 960)]), format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts, frame.time_base = 48000, i, Fraction(1, 48000)
        out += [(int(p.pts), bytes(p)) for p in enc.encode(frame)]
    out += [(int(p.pts), bytes(p)) for p in enc.encode(None)]
    return out


def decode_aac(config: bytes, frames: list[tuple[int, bytes]]) -> np.ndarray:
    dec = av.CodecContext.create("aac", "r")
    dec.extradata = config
    chunks = []
    for _pts, data in frames:
        for frame in dec.decode(av.Packet(data)):
            chunks.append(frame.to_ndarray())
    return np.concatenate(chunks, axis=1)


def test_opus_toc_durations_and_limits():
    assert opus_packet_samples(bytes([0xFC, 0])) == 960  # CELT FB 20 ms, one frame
    assert opus_packet_samples(bytes([0xFD, 0])) == 1920  # two frames
    assert opus_packet_samples(bytes([0x1B, 0x02])) == 2 * 2880  # SILK 60 ms, two frames: 120 ms
    with pytest.raises(RtpError, match="120 ms"):
        opus_packet_samples(bytes([0x1B, 0x03]))  # three 60 ms frames
    with pytest.raises(RtpError, match="zero frames"):
        opus_packet_samples(bytes([0xFF, 0x00]))
    with pytest.raises(RtpError, match="frame count"):
        opus_packet_samples(bytes([0xFF]))
    with pytest.raises(RtpError, match="empty"):
        OpusDepacketizer().push(RtpPacket(111, 1, 0, 1, b""))
    unit = OpusDepacketizer().push(RtpPacket(111, 1, 4242, 1, bytes([0xFC, 1, 2])))[0]
    assert (unit.timestamp, unit.data, unit.keyframe) == (4242, bytes([0xFC, 1, 2]), True)


def test_transcoded_audio_is_continuous_aac_on_the_sample_grid():
    core = OpusToAac()
    asc = parse_asc(core.config)
    assert (asc.object_type, asc.sample_rate, asc.channels) == (2, 48000, 2)
    start = 480_000
    out = []
    for pts, packet in opus_packets(2.0):
        out += core.push(start + pts, packet)
    out += core.flush()
    stamps = [pts for pts, _ in out]
    assert all(b - a == 1024 for a, b in zip(stamps, stamps[1:]))
    assert abs(stamps[0] - (start - 1024)) <= 1024  # the encoder's priming frame comes first
    pcm = decode_aac(core.config, out)
    assert pcm.shape[1] >= 2 * 48000 - 2048
    # The tone survives: its energy is at 440 Hz.
    spectrum = np.abs(np.fft.rfft(pcm[0, 24000:72000]))  # one second: 1 Hz per bin
    assert abs(int(np.argmax(spectrum)) - 440) < 3


def test_lost_packets_become_silence_and_long_gaps_restart():
    core = OpusToAac(max_gap=0.5)
    packets = opus_packets(1.0)
    out = []
    for i, (pts, packet) in enumerate(packets):
        if 10 <= i < 15:
            continue  # 100 ms lost
        out += core.push(pts + 48000, packet)
    assert core.gaps_filled == 1 and core.restarts == 0
    stamps = [pts for pts, _ in out]
    assert all(b - a == 1024 for a, b in zip(stamps, stamps[1:]))
    # Five seconds later: a restart on the new time, not five seconds of silence.
    before = len(out)
    for pts, packet in packets[:10]:
        out += core.push(pts + 48000 * 7, packet)
    assert core.restarts == 1
    assert len(out) - before < 20
    assert out[-1][0] >= 48000 * 7


def test_garbage_is_a_transcode_error_not_a_crash():
    core = OpusToAac()
    with pytest.raises(TranscodeError):
        for i in range(5):
            core.push(i * 960, bytes([0xFF, 0x3F]) + bytes(50))
    pts, packet = opus_packets(0.2)[0]
    core.push(10 * 960, packet)  # still usable afterwards


async def test_threaded_transcoder_delivers_in_order_on_the_loop():
    loop_thread = []
    got: list[tuple[int, bytes]] = []
    done = asyncio.Event()

    def on_output(frames):
        import threading

        loop_thread.append(threading.current_thread() is threading.main_thread())
        got.extend(frames)

    transcoder = ThreadedTranscoder(OpusToAac(), on_output)
    for pts, packet in opus_packets(1.0):
        transcoder.submit(pts, packet)
    transcoder.close()
    for _ in range(200):
        await asyncio.sleep(0.01)
        if transcoder.backlog == 0 and len(got) >= 46:
            done.set()
            break
    assert done.is_set(), (transcoder.backlog, len(got))
    assert all(loop_thread)
    stamps = [pts for pts, _ in got]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
