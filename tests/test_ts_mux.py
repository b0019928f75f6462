"""The MPEG-TS muxer: its packet loop (pure and compiled twins held equal, every packet
parsed back), and whole segments of a real clip against libavformat's muxer of the same
frames, checked with ffprobe and ffmpeg."""

from __future__ import annotations

import io
import json
import subprocess
from fractions import Fraction
from pathlib import Path

import av
from hypothesis import given, settings
from hypothesis import strategies as st

import mediacore.packager.ts_packets as pure
from mediacore.model.aac import adts_header, parse_asc
from mediacore.model.h264 import avcc_to_annexb, parse_avcc
from mediacore.model.media import Frame, Kind, Track
from mediacore.packager import ts
from mediacore.packager.ts import ID3_PID, PIDS, PMT_PID, TsMuxer, probe_first_pids

WRITERS = [pure] + ([ts._packets] if ts.TS_COMPILED else [])


def test_compiled_twin_is_built():
    assert ts.TS_COMPILED, "cython_ext.ts_packets was not compiled"
    assert ts._packets is not pure


def parse_packets(data: bytes, pid: int, counter: int) -> tuple[bytes, int, bool, int]:
    """Parse back the packets of one PES on `pid`: (payload, PCR base or -1, random access,
    next counter), checking every field a demuxer relies on."""
    assert len(data) % 188 == 0
    payload = b""
    pcr, random_access = -1, False
    for n, at in enumerate(range(0, len(data), 188)):
        packet = data[at : at + 188]
        assert packet[0] == 0x47
        assert bool(packet[1] & 0x40) == (n == 0), "payload_unit_start only on the first packet"
        assert ((packet[1] & 0x1F) << 8 | packet[2]) == pid
        control, cc = packet[3] >> 4, packet[3] & 0x0F
        assert cc == counter, f"packet {n}: continuity counter {cc}, expected {counter}"
        counter = (counter + 1) & 0x0F
        assert control in (0x1, 0x3)  # payload, with or without adaptation field
        head = 4
        if control == 0x3:
            length = packet[4]
            assert length <= 183
            if length:
                flags = packet[5]
                if n == 0:
                    random_access = bool(flags & 0x40)
                    if flags & 0x10:
                        b = packet[6:12]
                        pcr = (b[0] << 25) | (b[1] << 17) | (b[2] << 9) | (b[3] << 1) | (b[4] >> 7)
                        assert b[4] & 0x7E == 0x7E and (b[4] & 1) << 8 | b[5] == 0
                else:
                    assert flags == 0
                stuffing = packet[6 + (6 if n == 0 and flags & 0x10 else 0) : 5 + length]
                assert set(stuffing) <= {0xFF}
            head = 5 + length
        assert head < 188, "every packet carries payload"
        payload += packet[head:]
    return payload, pcr, random_access, counter


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 3000) | st.sampled_from([1, 175, 176, 177, 182, 183, 184, 185, 368, 369]),
    pid=st.integers(0x10, 0x1FFE),
    counter=st.integers(0, 15),
    pcr=st.integers(-1, (1 << 34)) | st.just(-1),
    random_access=st.booleans(),
)
def test_a_pes_cut_into_packets_parses_back_in_both_twins(size, pid, counter, pcr, random_access):
    pes = bytes((i * 7 + 3) & 0xFF for i in range(size))
    outputs = []
    for writer in WRITERS:
        packets = writer.pes_packets(size, pcr, random_access)
        out = bytearray(b"\xaa" * (packets * 188 + 10))  # stale bytes the writer must overwrite
        end = writer.write_pes(out, 5, pes, pid, counter, pcr, random_access)
        assert end == 5 + packets * 188
        assert out[:5] == b"\xaa" * 5 and out[end:] == b"\xaa" * 5
        outputs.append(bytes(out[5:end]))
    assert all(o == outputs[0] for o in outputs), "compiled and pure twins differ"
    payload, got_pcr, got_random_access, next_counter = parse_packets(outputs[0], pid, counter)
    assert payload == pes
    assert got_pcr == (pcr & ((1 << 33) - 1) if pcr >= 0 else -1)
    assert got_random_access == random_access
    assert next_counter == (counter + len(outputs[0]) // 188) & 0x0F


@settings(max_examples=50, deadline=None)
@given(pid=st.integers(0x10, 0x1FFE), counter=st.integers(0, 15), pcr=st.integers(0, (1 << 33) - 1))
def test_an_empty_pes_is_one_pcr_only_packet_in_both_twins(pid, counter, pcr):
    """Adaptation field alone: no payload unit start, the PID's last counter repeated, the PCR."""
    outputs = []
    for writer in WRITERS:
        assert writer.pes_packets(0, pcr, False) == 1
        out = bytearray(188)
        assert writer.write_pes(out, 0, b"", pid, counter, pcr, False) == 188
        outputs.append(bytes(out))
    assert all(o == outputs[0] for o in outputs), "compiled and pure twins differ"
    packet = outputs[0]
    assert packet[:3] == bytes((0x47, pid >> 8, pid & 0xFF))
    assert packet[3] == 0x20 | ((counter - 1) & 0x0F)
    assert packet[4:6] == bytes((183, 0x10)) and set(packet[12:]) == {0xFF}
    b = packet[6:12]
    assert (b[0] << 25) | (b[1] << 17) | (b[2] << 9) | (b[3] << 1) | (b[4] >> 7) == pcr


def clip_frames(path: Path) -> list[Frame]:
    """The clip's frames as the hub carries them (video at 90 kHz, audio at 48 kHz)."""
    container = av.open(str(path))
    vs, as_ = container.streams.video[0], container.streams.audio[0]
    video = Track(Kind.VIDEO, "h264", 90000, bytes(vs.codec_context.extradata))
    audio = Track(Kind.AUDIO, "aac", 48000, bytes(as_.codec_context.extradata))
    frames = []
    for packet in container.demux():
        if packet.size == 0 or packet.dts is None:
            continue
        tb = packet.time_base
        if packet.stream.type == "video":
            frames.append(
                Frame(
                    video, int(packet.dts * tb * 90000), int(packet.pts * tb * 90000), packet.is_keyframe, bytes(packet)
                )
            )
        else:
            at = int(packet.pts * tb * 48000)
            frames.append(Frame(audio, at, at, True, bytes(packet)))
    container.close()
    return frames


def libavformat_segment(frames: list[Frame], metadata: list[tuple[int, bytes]]) -> bytes:
    """The same frames muxed by libavformat (through PyAV): the reference our muxer must
    match access unit for access unit."""
    buf = io.BytesIO()
    out = av.open(buf, "w", format="mpegts")
    video = out.add_mux_stream("h264", time_base=Fraction(1, 90000))
    audio = out.add_mux_stream("aac", rate=48000)
    id3 = out.add_data_stream("timed_id3")
    id3.time_base = Fraction(1, 90000)
    for pts, tag in metadata:
        packet = av.Packet(tag)
        packet.time_base, packet.pts, packet.dts, packet.stream = Fraction(1, 90000), pts, pts, id3
        out.mux(packet)
    for frame in frames:
        track = frame.track
        if track.kind is Kind.VIDEO:
            data = avcc_to_annexb(frame.data, parse_avcc(track.config), frame.keyframe)
        else:
            data = adts_header(parse_asc(track.config), len(frame.data)) + frame.data
        packet = av.Packet(data)
        packet.time_base = Fraction(1, track.timebase)
        packet.dts, packet.pts, packet.is_keyframe = frame.dts, frame.pts, frame.keyframe
        packet.stream = video if track.kind is Kind.VIDEO else audio
        out.mux(packet)
    out.close()
    return buf.getvalue()


def probe(path: Path) -> tuple[list[tuple], list[tuple]]:
    """(streams, packets) as ffprobe reads them."""
    entries = "stream=codec_name,codec_type:packet=codec_type,pts,dts,size,flags"
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_streams",
            "-show_packets",
            "-show_entries",
            entries,
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report = json.loads(out)
    streams = [(s["codec_type"], s["codec_name"]) for s in report["streams"]]
    packets = sorted(
        (p["codec_type"], int(p["dts"]), int(p["pts"]), int(p["size"]), p["flags"][0]) for p in report["packets"]
    )
    return streams, packets


def test_segments_match_libavformat_and_continue_each_other(clip, tmp_path):
    frames = [f for f in clip_frames(clip) if f.dts >= 0]
    half = len(frames) // 2
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x12TXXX\x00\x00\x00\x08\x00\x00\x03card\x00p1"  # one TXXX frame
    tag_pts = frames[20].pts * 90000 // frames[20].track.timebase
    muxer = TsMuxer()
    first, second = bytes(muxer.mux(frames[:half], [(tag_pts, tag)])), bytes(muxer.mux(frames[half:]))
    for segment in (first, second):
        assert probe_first_pids(segment) == [0, PMT_PID]  # E5: PAT then PMT open each segment
    ours, reference = tmp_path / "ours.ts", tmp_path / "libavformat.ts"
    ours.write_bytes(first + second)
    reference.write_bytes(libavformat_segment(frames[:half], [(tag_pts, tag)]) + libavformat_segment(frames[half:], []))
    streams, packets = probe(ours)
    assert streams == [("video", "h264"), ("audio", "aac"), ("data", "timed_id3")]
    assert (streams, packets) == probe(reference)
    assert [p[:3] for p in packets if p[0] == "data"] == [("data", tag_pts, tag_pts)]
    starts = [e for e in walk(first, {}) if e[1] is not None]
    at = next(i for i, e in enumerate(starts) if e[0] == ID3_PID)
    assert starts[at - 1][2] < tag_pts <= starts[at + 1][2], "the tag goes in among the frames, at its PTS"
    # ffmpeg reports continuity errors ("Continuity check failed") at the default level (E2).
    result = subprocess.run(
        ["ffmpeg", "-v", "warning", "-i", str(ours), "-f", "null", "-"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    pids = {((first[i + 1] & 0x1F) << 8) | first[i + 2] for i in range(0, len(first), 188)}
    assert pids == {0, PMT_PID, PIDS[Kind.VIDEO], PIDS[Kind.AUDIO], ID3_PID}


def walk(data: bytes, counters: dict[int, int]) -> list[tuple[int, int | None, int | None, int | None]]:
    """Every PES start and every PCR of a run of segments, in order: (pid, PTS, DTS, PCR),
    None where absent. Checks each PID's continuity counter on the way (E2): it steps on a
    packet with payload and repeats on one without; `counters` holds each PID's last one."""
    events = []
    for at in range(0, len(data), 188):
        packet = data[at : at + 188]
        assert packet[0] == 0x47
        pid = (packet[1] & 0x1F) << 8 | packet[2]
        control, cc = packet[3] >> 4 & 0x3, packet[3] & 0x0F
        has_payload = bool(control & 0x1)
        if pid in counters:
            expected = (counters[pid] + 1) & 0x0F if has_payload else counters[pid]
            assert cc == expected, f"PID {pid:#x}: continuity counter {cc} after {counters[pid]}"
        counters[pid] = cc
        head, pcr = 4, None
        if control & 0x2:
            length = packet[4]
            if length and packet[5] & 0x10:
                b = packet[6:12]
                pcr = (b[0] << 25) | (b[1] << 17) | (b[2] << 9) | (b[3] << 1) | (b[4] >> 7)
            head = 5 + length
        pts = dts = None
        if packet[1] & 0x40 and pid not in (0, PMT_PID):
            pes = packet[head:]
            assert pes[:3] == b"\x00\x00\x01"
            pts = ts_field(pes[9:14]) if pes[7] & 0x80 else None
            dts = ts_field(pes[14:19]) if pes[7] & 0x40 else pts
        if pcr is not None or pts is not None:
            events.append((pid, pts, dts, pcr))
    return events


def ts_field(b: bytes) -> int:
    return ((b[0] >> 1) & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def pmt_of(segment: bytes) -> bytes:
    assert probe_first_pids(segment) == [0, PMT_PID]
    return segment[188 + 4 : 2 * 188]


def test_counters_run_on_over_many_segments(clip):
    frames = clip_frames(clip)
    muxer = TsMuxer()
    counters: dict[int, int] = {}
    size = len(frames) // 20
    for i in range(20):  # more than 16: every counter wraps
        walk(bytes(muxer.mux(frames[i * size : (i + 1) * size])), counters)
    assert set(counters) == {0, PMT_PID, PIDS[Kind.VIDEO], PIDS[Kind.AUDIO]}


def test_negative_and_wrapping_timestamps_keep_their_pcr(clip):
    """A PCR is the DTS modulo 2^33, whatever the sign or size of the DTS (RTMP timestamps
    stepping back from the first one unwrap below zero; long streams pass 2^33)."""
    frames = clip_frames(clip)[:60]
    for shift in (-10 * 90000, (1 << 33) - 45000):
        shifted = [
            Frame(
                f.track,
                f.dts + shift * f.track.timebase // 90000,
                f.pts + shift * f.track.timebase // 90000,
                f.keyframe,
                f.data,
            )
            for f in frames
        ]
        events = walk(bytes(TsMuxer().mux(shifted)), {})
        video = [e for e in events if e[0] == PIDS[Kind.VIDEO] and e[1] is not None]
        assert video and all(e[3] == e[2] for e in video), "every video PES carries its DTS as PCR"
        first = next(f for f in shifted if f.track.kind is Kind.VIDEO)
        assert video[0][2] == (first.dts * 90000 // first.track.timebase) & ((1 << 33) - 1)


def test_an_audio_only_segment_keeps_the_program_and_its_pcrs(clip):
    """Audio alone while video stalls: the same PMT (video still declared, the PCR still on
    its PID, version unchanged), and PCR-only packets keep PCRs within 100 ms."""
    frames = clip_frames(clip)
    third = len(frames) // 3
    muxer = TsMuxer()
    audio_alone = [f for f in frames[third : 2 * third] if f.track.kind is Kind.AUDIO]
    segments = [bytes(muxer.mux(part)) for part in (frames[:third], audio_alone, frames[2 * third :])]
    assert pmt_of(segments[0]) == pmt_of(segments[1]) == pmt_of(segments[2])
    counters: dict[int, int] = {}
    for segment in segments:
        walk(segment, counters)
    events = walk(segments[1], {})
    pcrs = [e[3] for e in events if e[3] is not None]
    assert all(e[0] == PIDS[Kind.VIDEO] for e in events if e[3] is not None), "PCRs on the PMT's PCR PID"
    assert pcrs and max(b - a for a, b in zip(pcrs, pcrs[1:])) <= 9000
    audio = [e for e in events if e[0] == PIDS[Kind.AUDIO]]
    assert pcrs[0] <= audio[0][2], "a PCR before the first PES"


def test_a_kind_added_later_steps_the_pmt_version(clip):
    frames = clip_frames(clip)
    muxer = TsMuxer()
    first = bytes(muxer.mux([f for f in frames[:100] if f.track.kind is Kind.AUDIO]))
    second = bytes(muxer.mux(frames[100:200]))
    version = lambda segment: (pmt_of(segment)[6] >> 1) & 0x1F  # noqa: E731
    assert (version(first), version(second)) == (0, 1)
    pcr_pid = lambda segment: (pmt_of(segment)[9] & 0x1F) << 8 | pmt_of(segment)[10]  # noqa: E731
    assert (pcr_pid(first), pcr_pid(second)) == (PIDS[Kind.AUDIO], PIDS[Kind.VIDEO])


def test_audio_only_streams_carry_the_pcr_on_audio():
    audio = Track(Kind.AUDIO, "aac", 48000, bytes.fromhex("1190"))
    frames = [Frame(audio, i * 1024, i * 1024, True, b"\x21" * 200) for i in range(10)]
    events = walk(bytes(TsMuxer().mux(frames)), {})
    assert [(e[0], e[3]) for e in events if e[0] == PIDS[Kind.AUDIO]] == [
        (PIDS[Kind.AUDIO], i * 1920) for i in range(10)
    ]


def test_psi_sections_are_the_standard_ones():
    """PAT and PMT byte for byte as libavformat writes them for this program (its PAT CRC is
    the well-known 2ab104b2), padded to one packet."""
    pat, pmt = ts._psi((Kind.VIDEO, Kind.AUDIO))
    assert pat == bytes.fromhex("0000b00d0001c100000001f0002ab104b2").ljust(184, b"\xff")
    assert pmt.startswith(
        bytes.fromhex("0002b02b0001c10000e100f0001be100f0000fe101f00015e102f00f260dffff49443320ff49443320000f")
    )
    assert pmt == ts._psi((Kind.VIDEO, Kind.AUDIO), 0)[1] != ts._psi((Kind.VIDEO, Kind.AUDIO), 1)[1]
