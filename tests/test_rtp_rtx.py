"""RTP retransmission (RFC 4588) and NACK timing (RFC 4585): the SDP's rtx payload type, the
jitter buffer asking again for what can still arrive, and retransmissions restored into
the original stream before the jitter buffer."""

from __future__ import annotations

import pytest
from test_abuse_rtsp import IDR, FakePublisher, rtp
from test_rtp_core import BUILDS

from ingest.rtp.config import NACK_INTERVAL, RTX_MAX_NACKS, RTX_PLAYOUT_DELAY
from ingest.rtp.errors import RtpError
from ingest.rtp.packet import Nack, RtpPacket, parse_rtcp
from ingest.rtp.receiver import TrackReceiver
from ingest.rtp.sdp import parse_sdp
from ingest.rtp.to_stream import SessionClock

RTX_SDP = """v=0
m=video 5004 RTP/AVPF 96 97
a=rtpmap:96 H264/90000
a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z2QAH6zZQFAFuwEQAAADABAAAAMDIPGDGWA=,aOvssiw=
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96;rtx-time=3000
m=audio 5006 RTP/AVP 97
a=rtpmap:97 MPEG4-GENERIC/48000/2
a=fmtp:97 streamtype=5;mode=AAC-hbr;config=1190;sizelength=13;indexlength=3;indexdeltalength=3
"""
SENDER_SSRC = 0x5EED
RTX_SSRC = 0x7E7E


def test_sdp_names_the_retransmission_payload_type_of_each_media():
    video, audio = parse_sdp(RTX_SDP).media
    assert (video.payload_type, video.rtx_payload_type, video.rtx_time) == (96, 97, 3.0)
    assert "apt" not in video.fmtp and video.fmtp["packetization-mode"] == "1"  # RTX's parameters stay apart
    assert (audio.payload_type, audio.rtx_payload_type) == (97, None)  # 97 is audio's own format here
    assert audio.fmtp["config"] == "1190"
    plain = parse_sdp(RTX_SDP.replace("apt=96", "apt=100")).media[0]
    assert plain.rtx_payload_type is None  # retransmissions of a format this media does not carry
    with pytest.raises(RtpError, match="no valid apt="):
        parse_sdp(RTX_SDP.replace("apt=96;", ""))
    with pytest.raises(RtpError, match="rtx-time"):
        parse_sdp(RTX_SDP.replace("rtx-time=3000", "rtx-time=soon"))
    assert parse_sdp(RTX_SDP.replace("rtx-time=3000", "rtx-time=99999999")).media[0].rtx_time == 10.0


@pytest.fixture(params=BUILDS, ids=lambda c: c.__module__)
def rtx_jb(request):
    return request.param(
        90000, capacity=64, min_delay=0.25, max_delay=0.5, loss_dwell=0.02, max_nacks=3, nack_interval=0.02
    )


def test_a_missing_packet_is_asked_for_again_until_it_could_no_longer_arrive(rtx_jb):
    jb = rtx_jb

    def arrive(seq: int, t: float) -> None:
        jb.push(seq, round(t * 90000), 1, seq, t)  # on time: no jitter

    for seq, t in ((10, 0.0), (11, 0.001), (13, 0.002), (14, 0.003)):
        arrive(seq, t)
    assert jb.pop(0.004) == [10, 11]
    assert jb.nacks(0.01) == []  # not yet missing for the dwell
    assert jb.nacks(0.03) == [12]
    assert jb.nacks(0.04) == []  # asked for 10 ms ago: an answer may be under way
    assert jb.nacks(0.05) == [12]  # loss_dwell + nack_interval
    assert jb.nacks(0.07) == [12]  # the third and last ask
    assert jb.nacks(0.2) == []
    assert jb.pop(0.26) == [13, 14] and jb.lost == 1  # 13 waited the playout delay
    # A packet is not asked for once its answer could no longer come in time: 16 is given
    # up when 17 (arrived at 0.5) has waited 0.25 s, and an ask at 0.74 would be answered
    # no sooner than 0.76.
    arrive(15, 0.48)
    arrive(17, 0.5)
    assert jb.nacks(0.74) == []
    arrive(19, 0.75)
    assert jb.nacks(0.78) == [18]


def test_a_gap_waits_twice_the_jitter_before_it_is_asked_for(rtx_jb):
    jb = rtx_jb
    for seq, t in ((1, 0.0), (3, 0.001)):
        jb.push(seq, seq * 3000, 1, seq, t)
    jb.jitter = 0.04 * 90000  # 40 ms of interarrival jitter: a reordered packet may be 80 ms behind
    assert jb.nacks(0.05) == []
    assert jb.nacks(0.082) == [2]


def test_a_retransmission_leaves_the_jitter_estimate_alone(rtx_jb):
    jb = rtx_jb
    for seq in range(5):
        jb.push(seq, seq * 3000, 1, seq, seq / 30)
    before = jb.jitter
    assert jb.push(7, 7 * 3000, 1, 7, 0.3, True)  # 70 ms late: the repair's delay, not the network's
    assert jb.jitter == before and jb.received == 6


def sender(payload_type: int, seq: int, ssrc: int, payload: bytes, timestamp: int) -> bytes:
    return RtpPacket(payload_type, seq & 0xFFFF, timestamp, ssrc, payload, True).serialize()


def test_receiver_restores_retransmissions_into_the_original_stream():
    media = parse_sdp(RTX_SDP).media[0]
    publisher = FakePublisher()
    receiver = TrackReceiver(media, publisher, "test", SessionClock(), 1)
    assert receiver.jitter.min_delay == RTX_PLAYOUT_DELAY and receiver.jitter.max_nacks == RTX_MAX_NACKS
    assert receiver.jitter.nack_interval == NACK_INTERVAL
    for seq in (100, 101, 103):
        assert receiver.on_rtp(sender(96, seq, SENDER_SSRC, IDR, seq * 3000), seq / 1000, 0.0)
    assert receiver.jitter.released == 2  # 103 waits behind the gap
    (nack,) = [p for data in receiver.tick(0.13, 0.0) for p in parse_rtcp(data) if isinstance(p, Nack)]
    assert (nack.media_ssrc, nack.lost) == (SENDER_SSRC, [102])
    # RFC 4588: the retransmission has its own SSRC, payload type and sequence numbers; the
    # original sequence number leads its payload.
    assert receiver.on_rtp(sender(97, 5000, RTX_SSRC, (102).to_bytes(2, "big") + IDR, 102 * 3000), 0.15, 0.0)
    assert receiver.jitter.released == 4 and receiver.jitter.lost == 0
    assert receiver.depacketizer.damaged_units == 0  # the restored packet is the original one: no frame lost
    assert receiver.on_rtp(sender(97, 5001, RTX_SSRC, (102).to_bytes(2, "big") + IDR, 102 * 3000), 0.16, 0.0)
    counters = receiver.counters()
    assert (counters["nacked"], counters["rtx_received"], counters["rtx_recovered"]) == (1, 2, 1)
    assert counters["duplicate"] == 1
    # Another SSRC's retransmissions are a stranger's; a payload without its OSN is refused.
    assert not receiver.on_rtp(sender(97, 5002, 0xBAD, (104).to_bytes(2, "big") + IDR, 0), 0.17, 0.0)
    assert receiver.on_rtp(sender(97, 5003, RTX_SSRC, b"\x00", 0), 0.18, 0.0)
    assert receiver.counters()["foreign"] == 1 and receiver.counters()["bad"] == 1


def test_a_track_without_retransmissions_keeps_one_nack_per_gap_and_ignores_rtx():
    media = parse_sdp(RTX_SDP.replace("a=rtpmap:97 rtx/90000\n", "")).media[0]
    receiver = TrackReceiver(media, FakePublisher(), "test", SessionClock(), 1)
    assert media.rtx_payload_type is None and receiver.jitter.max_nacks == 1
    assert receiver.on_rtp(rtp(96, 1, IDR, SENDER_SSRC), 0.0, 0.0)
    assert receiver.on_rtp(rtp(97, 2, (1).to_bytes(2, "big") + IDR, RTX_SSRC), 0.01, 0.0)  # another format: ignored
    assert receiver.counters()["rtx_received"] == 0 and receiver.jitter.received == 1
