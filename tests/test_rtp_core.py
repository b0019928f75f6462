"""RTP/RTCP parsing and the jitter buffer (both builds), with bytes and injected time only."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.rtp import compiled
from ingest.rtp import rtp_packet as pure_rtp
from ingest.rtp.errors import RtpError
from ingest.rtp.jitter_buffer import JitterBuffer as PureJitterBuffer
from ingest.rtp.packet import Nack, ReceiverReport, ReportBlock, RtpPacket, parse_rtcp

BUILDS = [PureJitterBuffer] + ([compiled.JitterBuffer] if compiled.JITTER_COMPILED else [])
PARSERS = [pure_rtp.parse_rtp] + ([compiled.parse_rtp] if compiled.RTP_COMPILED else [])


def test_compiled_twins_are_built():
    assert compiled.JITTER_COMPILED and compiled.JitterBuffer is not PureJitterBuffer
    assert compiled.RTP_COMPILED and compiled.parse_rtp is not pure_rtp.parse_rtp


# RTP / RTCP ---------------------------------------------------------------------------


@pytest.mark.parametrize("parse", PARSERS, ids=lambda f: f.__module__)
def test_rtp_roundtrip(parse):
    for packet in (
        RtpPacket(96, 1, 2, 3, b"x"),
        RtpPacket(97, 65535, 2**32 - 1, 7, b"abc", True, [1, 2, 3], 0xBEDE, b"\x10\x01\x00\x00", 4),
    ):
        data = packet.serialize()
        parsed = parse(data)
        assert parsed.fields() == packet.fields()
        assert parsed.payload == packet.payload and parsed.payload_size == len(packet.payload)
        assert parsed.serialize() == data
        assert parsed.data is data  # parsing copies nothing


def outcome(parse, data: bytes) -> tuple:
    try:
        return ("ok", parse(data).fields())
    except RtpError as e:
        return ("error", str(e))


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.binary(min_size=0, max_size=120))
def test_rtp_parser_twins_agree(b0, b1, rest):
    """Same fields or the same error from both builds, on headers of every shape (the
    first byte decides version, padding, extension and CSRC count)."""
    data = bytes(((b0 & 0x3F) | 0x80 if b0 & 1 else b0, b1)) + rest  # half of them version 2
    outcomes = {outcome(parse, data) for parse in PARSERS}
    assert len(outcomes) == 1, outcomes


@pytest.mark.parametrize(
    "data,message",
    [
        (bytes([0x90, 96]) + bytes(10) + struct.pack(">HH", 0xBEDE, 100) + b"abcd", "extension of 400 bytes runs past"),
        (bytes([0x8F, 96]) + bytes(18), "CSRC count 15 needs 72 bytes, the packet has 20"),
        (bytes([0xA0, 96]) + bytes(10) + b"ab" + bytes([200]), "padding of 200 bytes is longer than the payload"),
        (bytes([0xA0, 96]) + bytes(10) + b"ab" + bytes([0]), "padding of 0 bytes"),
        (bytes([0x40, 96]) + bytes(10), "RTP version 1"),
        (bytes(11), "shorter than its 12-byte header"),
    ],
)
def test_rtp_bad_headers(data, message):
    for parse in PARSERS:
        with pytest.raises(RtpError, match=message):
            parse(data)


def test_rtcp_roundtrips_and_bad_length():
    rr = ReceiverReport(1, [ReportBlock(2, 10, 70000, 123456, 33, 5, 6)])
    assert parse_rtcp(rr.serialize()) == [rr]
    nack = Nack(1, 2, [65534, 65535, 0, 1, 40])
    (back,) = parse_rtcp(nack.serialize())
    assert sorted(back.lost) == sorted(nack.lost)
    sr = struct.pack(">BBH", 0x80, 200, 6) + struct.pack(">IIIIII", 9, 3_900_000_000, 2**31, 1234, 10, 1000)
    (parsed,) = parse_rtcp(sr + rr.serialize())[:1]
    assert parsed.rtp_timestamp == 1234 and abs(parsed.ntp_seconds - 3_900_000_000.5) < 1e-6
    with pytest.raises(RtpError, match="RTCP length 400 runs past the datagram"):
        parse_rtcp(struct.pack(">BBH", 0x80, 201, 99) + bytes(8))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=256))
def test_fuzz_rtp_and_rtcp_parsers(data):
    for parse in (*PARSERS, parse_rtcp):
        try:
            parse(data)
        except RtpError:
            pass


# Jitter buffer -------------------------------------------------------------------------


@pytest.fixture(params=BUILDS, ids=lambda c: c.__module__)
def jb(request):
    return request.param(90000, capacity=64, min_delay=0.05, max_delay=0.5, loss_dwell=0.02)


def feed(jb, seqs, ssrc=1, start=0.0, step=0.001):
    for i, s in enumerate(seqs):
        jb.push(s & 0xFFFF, (s * 3000) & 0xFFFFFFFF, ssrc, s & 0xFFFF, start + i * step)


def test_reorder_duplicates_and_in_order_release(jb):
    feed(jb, [1, 2, 4, 3, 3, 5])
    assert jb.pop(0.01) == [1, 2, 3, 4, 5]
    assert (jb.received, jb.duplicates, jb.reordered, jb.lost) == (5, 1, 1, 0)


def test_loss_is_nacked_after_the_dwell_then_skipped_after_the_delay(jb):
    feed(jb, [10, 11, 13, 14])
    assert jb.pop(0.004) == [10, 11]
    assert jb.nacks(0.01) == []  # not yet missing for loss_dwell
    assert jb.nacks(0.03) == [12]
    assert jb.nacks(0.04) == []  # reported once
    assert jb.pop(0.03) == []  # 13 has not waited the playout delay yet
    assert jb.pop(0.06) == [13, 14]
    assert jb.lost == 1
    jb.push(12, 36000, 1, 12, 0.07)  # arrives after its gap was given up
    assert jb.late == 1 and jb.pop(0.08) == []


def test_sequence_wrap(jb):
    feed(jb, list(range(65530, 65536)) + [65537, 65536, 65538])
    assert jb.pop(0.02) == [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2]
    assert jb.lost == 0 and jb.reordered == 1


def test_ssrc_change_and_jump_resync_once(jb):
    feed(jb, range(100, 110))
    assert len(jb.pop(0.02)) == 10
    feed(jb, range(5000, 5010), ssrc=2, start=0.03)  # new sender
    assert jb.pop(0.05) == list(range(5000, 5010))
    feed(jb, range(30000, 30005), ssrc=2, start=0.06)  # the same sender jumps
    assert jb.pop(0.08) == list(range(30000, 30005))
    assert jb.resyncs == 2 and jb.lost == 0 and jb.late == 0


def test_jitter_estimate_and_adaptive_delay(jb):
    # 30 ms of arrival jitter on a 33 ms packet clock: the delay grows above its minimum.
    for i in range(300):
        arrival = i * 0.0333 + (0.03 if i % 2 else 0.0)
        jb.push(i, i * 3000, 1, i, arrival)
        jb.pop(arrival)
    assert 0.5 * 0.03 * 90000 < jb.jitter < 1.5 * 0.03 * 90000
    assert jb.min_delay < jb.delay <= jb.max_delay


def test_window_bounded_by_count(jb):
    feed(jb, [0] + list(range(2, 200)))  # packet 1 never comes; the window is 64
    released = jb.pop(0.0)
    assert released[0] == 0 and jb.lost >= 1 and len(jb) <= 64


operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(-40, 80), st.sampled_from([1, 1, 1, 2]), st.floats(0, 0.05)),
        st.tuples(st.just("pop"), st.just(0), st.just(0), st.floats(0, 0.2)),
        st.tuples(st.just("nacks"), st.just(0), st.just(0), st.floats(0, 0.2)),
        st.tuples(st.just("jump"), st.integers(3000, 40000), st.just(1), st.floats(0, 0.05)),
        st.tuples(st.just("rtx"), st.integers(-40, 5), st.just(1), st.floats(0, 0.05)),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 65535), operations)
def test_twins_agree_on_random_operation_sequences(base, ops):
    if not compiled.JITTER_COMPILED:
        pytest.fail("compiled twin missing")
    a = PureJitterBuffer(
        48000, capacity=32, min_delay=0.01, max_delay=0.1, loss_dwell=0.01, max_nacks=3, nack_interval=0.02
    )
    b = compiled.JitterBuffer(
        48000, capacity=32, min_delay=0.01, max_delay=0.1, loss_dwell=0.01, max_nacks=3, nack_interval=0.02
    )
    now = 0.0
    seq = base
    for op, delta, ssrc, dt in ops:
        now += dt
        if op in ("push", "jump"):
            seq = (seq + delta) & 0xFFFF
            ts = (seq * 960) & 0xFFFFFFFF
            assert a.push(seq, ts, ssrc, seq, now) == b.push(seq, ts, ssrc, seq, now)
        elif op == "rtx":  # a retransmission of an earlier packet: the jitter estimate stays
            old = (seq + delta) & 0xFFFF
            ts = (old * 960) & 0xFFFFFFFF
            assert a.push(old, ts, ssrc, old, now, True) == b.push(old, ts, ssrc, old, now, True)
        elif op == "pop":
            assert a.pop(now) == b.pop(now)
        else:
            assert a.nacks(now) == b.nacks(now)
        assert (a.received, a.duplicates, a.late, a.lost, a.reordered, a.resyncs, a.released, len(a)) == (
            b.received,
            b.duplicates,
            b.late,
            b.lost,
            b.reordered,
            b.resyncs,
            b.released,
            len(b),
        )
        assert a.jitter == pytest.approx(b.jitter) and a.delay == pytest.approx(b.delay)
