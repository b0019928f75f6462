"""MP4A-LATM (RFC 6416): StreamMuxConfig parsing and AudioMuxElement depacketizing on
configs and payloads built here field by field (GStreamer's own bytes are in
test_fixtures_real_peers.py), round trips under hypothesis, and the refusals."""

from __future__ import annotations

import pytest
from conftest import RecordingPublisher
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.rtp.errors import RtpError
from ingest.rtp.latm import (
    MAX_AAC_FRAME_BYTES,
    MAX_ELEMENT_BYTES,
    LatmDepacketizer,
    parse_audio_mux_elements,
    parse_stream_mux_config,
)
from ingest.rtp.packet import RtpPacket
from ingest.rtp.receiver import TrackReceiver
from ingest.rtp.sdp import check_ingestible, parse_sdp
from ingest.rtp.to_stream import SessionClock


class Bits:
    """Writes fields most significant bit first; bytes() pads the last byte with zeros."""

    def __init__(self) -> None:
        self.value = 0
        self.size = 0

    def put(self, n: int, value: int) -> Bits:
        assert 0 <= value < 1 << n
        self.value = self.value << n | value
        self.size += n
        return self

    def extend(self, other: Bits) -> Bits:
        return self.put(other.size, other.value)

    def latm_value(self, value: int) -> Bits:
        count = max(1, (value.bit_length() + 7) // 8)
        return self.put(2, count - 1).put(8 * count, value)

    def __bytes__(self) -> bytes:
        pad = -self.size % 8
        return (self.value << pad).to_bytes((self.size + pad) // 8, "big")


RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def asc_bits(object_type: int = 2, rate_index: int = 3, channels: int = 2, sbr_sync: bool = False) -> Bits:
    bits = Bits().put(5, object_type).put(4, rate_index).put(4, channels).put(3, 0)  # GASpecificConfig: 0, 0, 0
    if sbr_sync:
        bits.put(11, 0x2B7).put(5, 5).put(1, 0)
    return bits


def mux_config(
    asc: Bits,
    version: int = 0,
    sub_frames: int = 1,
    other_data_bits: int = 0,
    crc: bool = False,
    frame_length_type: int = 0,
    programs: int = 0,
    layers: int = 0,
    same_time_framing: int = 1,
    short: bool = False,
) -> bytes:
    bits = Bits().put(1, version)
    if version:
        bits.put(1, 0).latm_value(0xFF)  # audioMuxVersionA, taraBufferFullness
    bits.put(1, same_time_framing).put(6, sub_frames - 1).put(4, programs).put(3, layers)
    if version:
        bits.latm_value(asc.size).extend(asc)
    else:
        bits.extend(asc)
    if short:
        return bytes(bits)
    bits.put(3, frame_length_type).put(8, 0xFF).put(1, 1 if other_data_bits else 0)
    if other_data_bits:
        if version:
            bits.latm_value(other_data_bits)
        else:
            chunks = list(other_data_bits.to_bytes((other_data_bits.bit_length() + 7) // 8, "big"))
            for i, chunk in enumerate(chunks):
                bits.put(1, 1 if i < len(chunks) - 1 else 0).put(8, chunk)
    bits.put(1, 1 if crc else 0)
    if crc:
        bits.put(8, 0x5A)
    return bytes(bits)


def element(frames: list[bytes], other: bytes = b"") -> bytes:
    out = b""
    for frame in frames:
        out += b"\xff" * (len(frame) // 255) + bytes((len(frame) % 255,)) + frame
    return out + other


def rtp(payload: bytes, ts: int, marker: bool = True, seq: int = 1) -> RtpPacket:
    return RtpPacket(96, seq, ts, 1, payload, marker)


@settings(max_examples=300, deadline=None)
@given(
    version=st.integers(0, 1),
    sub_frames=st.integers(1, 64),
    other_data_bits=st.integers(0, 4096),
    crc=st.booleans(),
    object_type=st.sampled_from([1, 2, 3, 4]),
    rate_index=st.integers(0, 12),
    channels=st.integers(1, 7),
    sbr_sync=st.booleans(),
)
def test_stream_mux_config_round_trip(
    version, sub_frames, other_data_bits, crc, object_type, rate_index, channels, sbr_sync
):
    asc = asc_bits(object_type, rate_index, channels, sbr_sync)
    config = mux_config(asc, version, sub_frames, other_data_bits, crc)
    mux = parse_stream_mux_config(config)
    assert (mux.audio_mux_version, mux.sub_frames, mux.other_data_bits) == (version, sub_frames, other_data_bits)
    assert (mux.audio.object_type, mux.audio.sample_rate, mux.audio.channels) == (
        object_type,
        RATES[rate_index],
        channels,
    )
    assert mux.asc == bytes(asc)


def test_short_form_of_rtpmp4apay_and_explicit_sbr():
    # rtpmp4apay stops after the AudioSpecificConfig; a 2-byte ASC from voaacenc leaves one bit.
    mux = parse_stream_mux_config(mux_config(asc_bits(2, 4, 2), short=True))
    assert (mux.asc, mux.audio.sample_rate, mux.other_data_bits) == (bytes.fromhex("1210"), 44100, 0)
    # HE-AAC signalled explicitly (object type 5, SBR rate, then the AAC-LC core).
    he = Bits().put(5, 5).put(4, 6).put(4, 2).put(4, 3).put(5, 2).put(3, 0)
    mux = parse_stream_mux_config(mux_config(he))
    assert (mux.audio.object_type, mux.audio.sample_rate, mux.audio.channels) == (2, 24000, 2)


@pytest.mark.parametrize(
    "config,message",
    [
        (b"", "without config="),
        (bytes(65), "exceeds 64"),
        (mux_config(asc_bits(), programs=1), "more than one program"),
        (mux_config(asc_bits(), layers=2), "more than one layer"),
        (mux_config(asc_bits(), same_time_framing=0), "allStreamsSameTimeFraming 0"),
        (mux_config(asc_bits(), frame_length_type=1), "frameLengthType 1"),
        (mux_config(asc_bits(object_type=8)), "object type 8 is not AAC"),
        (mux_config(asc_bits(channels=0)), "program_config_element"),
        (mux_config(asc_bits(rate_index=13)), "reserved samplingFrequencyIndex 13"),
        (bytes.fromhex("c0"), "audioMuxVersionA 1 is reserved"),
        (bytes.fromhex("4000"), "ends inside"),
        (bytes(Bits().put(1, 1).put(1, 0).latm_value(0).put(14, 0x2000).latm_value(4000).put(8, 0)), "ascLen"),
        (mux_config(asc_bits(), other_data_bits=0x7FFFFFF), "otherDataLenBits"),
    ],
)
def test_stream_mux_config_refusals(config, message):
    with pytest.raises(RtpError, match=message):
        parse_stream_mux_config(config)


frames_strategy = st.lists(st.binary(min_size=1, max_size=700), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(frames=frames_strategy, sub_frames=st.integers(1, 3), other_data_bits=st.integers(0, 20), data=st.data())
def test_elements_fragmented_anywhere_give_back_their_frames(frames, sub_frames, other_data_bits, data):
    """Frames in elements of `sub_frames` each (lengths past 255 continued with 0xFF bytes),
    each element cut into fragments at arbitrary points, the marker on its last."""
    frames = frames[: len(frames) - len(frames) % sub_frames] or frames[:0]
    mux = parse_stream_mux_config(mux_config(asc_bits(), sub_frames=sub_frames, other_data_bits=other_data_bits))
    dep = LatmDepacketizer(mux)
    out = []
    other = bytes((other_data_bits + 7) // 8)
    seq = 0
    for n in range(0, len(frames), sub_frames):
        payload = element(frames[n : n + sub_frames], other)
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(payload) - 1)), max_size=4)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)]) if a < b]
        for i, piece in enumerate(pieces):
            seq += 1
            out += dep.push(rtp(piece, 5000 + 1024 * n, marker=i == len(pieces) - 1, seq=seq))
    assert [u.data for u in out] == frames
    assert [u.timestamp for u in out] == [5000 + 1024 * i for i in range(len(frames))]


def test_several_elements_in_one_packet_and_timestamp_wrap():
    mux = parse_stream_mux_config(mux_config(asc_bits()))
    dep = LatmDepacketizer(mux)
    frames = [b"a" * 10, b"b" * 300, b"c"]
    units = dep.push(rtp(element(frames[:1]) + element(frames[1:2]) + element(frames[2:]), 0xFFFFFF00))
    assert [(u.timestamp, u.data) for u in units] == [
        (0xFFFFFF00, frames[0]),
        (0x300, frames[1]),  # + 1024, wrapped
        (0x700, frames[2]),
    ]


def test_element_without_its_marker_ends_at_the_next_timestamp():
    mux = parse_stream_mux_config(mux_config(asc_bits()))
    dep = LatmDepacketizer(mux)
    assert dep.push(rtp(element([b"x" * 5]), 0, marker=False)) == []
    (first, second) = dep.push(rtp(element([b"y" * 5]), 1024))
    assert (first.data, second.data) == (b"x" * 5, b"y" * 5)


@pytest.mark.parametrize(
    "payload,message",
    [
        (b"\x05abc", "runs 2 bytes past the element"),
        (b"\xff" * 30, "exceeds 6144"),
        (b"\xff", "ends inside a PayloadLengthInfo"),
    ],
)
def test_bad_elements_are_refused(payload, message):
    mux = parse_stream_mux_config(mux_config(asc_bits()))
    with pytest.raises(RtpError, match=message):
        LatmDepacketizer(mux).push(rtp(payload, 0))


def test_other_data_must_fit_and_element_size_is_bounded():
    mux = parse_stream_mux_config(mux_config(asc_bits(), other_data_bits=16))
    assert [u.data for u in parse_audio_mux_elements(mux, element([b"ab"]) + b"zz", 0, 1024)] == [b"ab"]
    with pytest.raises(RtpError, match="inside its other data"):
        parse_audio_mux_elements(mux, element([b"ab"]) + b"z", 0, 1024)
    dep = LatmDepacketizer(parse_stream_mux_config(mux_config(asc_bits())))
    chunk = bytes(60000)
    assert dep.push(rtp(chunk, 0, marker=False)) == []
    with pytest.raises(RtpError, match=f"exceeds {MAX_ELEMENT_BYTES}"):
        dep.push(rtp(chunk, 0, marker=False, seq=2))
    assert dep.push(rtp(b"\x01a", 0, seq=3)) == []  # the rest of the refused element is dropped
    assert [u.data for u in dep.push(rtp(b"\x01b", 1024, seq=4))] == [b"b"]
    assert MAX_AAC_FRAME_BYTES == 6144


LATM_SDP = "m=audio 0 RTP/AVP 96\r\na=rtpmap:96 MP4A-LATM/{rate}/2\r\na=fmtp:96 {fmtp}\r\n"


@pytest.mark.parametrize(
    "rate,fmtp,message",
    [
        (48000, "cpresent=1;config=400023203fc0", "cpresent=1"),
        (48000, "config=400023203fc0", "cpresent=1"),  # RFC 3016's default
        (48000, "cpresent=0", "without config="),
        (44100, "cpresent=0;config=400023203fc0", "clock rate 44100 differs from the AAC sampling rate 48000"),
        (48000, "cpresent=0;config=400023203fc0zz", "not hex"),
    ],
)
def test_sdp_refusals(rate, fmtp, message):
    sdp = parse_sdp(LATM_SDP.format(rate=rate, fmtp=fmtp))
    with pytest.raises(RtpError, match=message):
        check_ingestible(sdp)


def test_receiver_publishes_the_aac_track_and_frames_and_counts_damage():
    config = mux_config(asc_bits(2, 3, 2))
    assert config.hex() == "400023203fc0"  # LC, 48 kHz, stereo; 3 + 8 + 1 + 1 bits after the ASC
    (media,) = parse_sdp(LATM_SDP.format(rate=48000, fmtp=f"cpresent=0;config={config.hex()}")).media
    recorder = RecordingPublisher()
    receiver = TrackReceiver(media, recorder, "test", SessionClock())  # type: ignore[arg-type]
    (track,) = recorder.tracks
    assert (track.codec, track.config, track.sample_rate, track.channels, track.codec_string) == (
        "aac",
        bytes.fromhex("1190"),
        48000,
        2,
        "mp4a.40.2",
    )

    def datagram(seq: int, ts: int, payload: bytes, marker: bool) -> bytes:
        return RtpPacket(96, seq, ts, 7, payload, marker).serialize()

    frame = element([b"\x21" * 40])
    receiver.on_rtp(datagram(1, 0, frame[:20], False), 0.0, 100.0)
    receiver.on_rtp(datagram(2, 0, frame[20:], True), 0.001, 100.0)
    # Packet 3 (the first half of the next element) is lost; its second half goes too.
    receiver.on_rtp(datagram(4, 1024, frame[20:], True), 0.002, 100.0)
    receiver.on_rtp(datagram(5, 2048, frame, True), 0.003, 100.0)
    receiver.finish(10.0, 101.0)
    assert [f.data for f in recorder.frames] == [b"\x21" * 40] * 2
    assert recorder.frames[1].pts - recorder.frames[0].pts == 2048
    assert receiver.counters()["damaged_frames"] == 1
