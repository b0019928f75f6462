"""RTP retransmission (RFC 4588) and NACK timing (RFC 4585): the SDP's rtx payload type, the
jitter buffer asking again for what can still arrive, and retransmissions restored into
the original stream before the jitter buffer."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest
from conftest import (
    RecordingPublisher,
    free_port,
    make_clip,
    play_in_browser,
    require_tool,
    start_process,
    stop_process,
    until,
    wait_for_playlist,
)
from impair import RtcpRelay, RtpImpairmentRelay, free_udp_pair, playhead_frames
from test_abuse_rtsp import IDR, rtp
from test_rtp_core import BUILDS
from test_rtsp_bad_input import scrape

from ingest.rtp.config import NACK_INTERVAL, RTX_MAX_NACKS, RTX_PLAYOUT_DELAY, SOURCE_SILENCE
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


def test_a_gap_is_asked_for_after_the_dwell_however_large_the_jitter(rtx_jb):
    """Video with B-frames: its RTP timestamps jump by frame intervals, so the RFC 3550
    jitter grows with the encoder's reordering; the NACK dwell does not follow it."""
    jb = rtx_jb
    for seq, t in ((1, 0.0), (3, 0.001)):
        jb.push(seq, seq * 3000, 1, seq, t)
    jb.jitter = 0.1 * 90000
    assert jb.nacks(0.015) == []
    assert jb.nacks(0.025) == [2]


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
    publisher = RecordingPublisher()
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


def test_a_sender_that_restarts_brings_its_new_retransmission_ssrc():
    receiver = TrackReceiver(parse_sdp(RTX_SDP).media[0], RecordingPublisher(), "test", SessionClock(), 1)
    assert receiver.on_rtp(sender(96, 1, SENDER_SSRC, IDR, 3000), 0.0, 0.0)
    assert receiver.on_rtp(sender(97, 9, RTX_SSRC, (1).to_bytes(2, "big") + IDR, 3000), 0.01, 0.0)
    later = SOURCE_SILENCE + 0.1  # the sender's SSRC was silent that long: a restarted sender takes over
    assert receiver.on_rtp(sender(96, 500, 0xF00D, IDR, 9000), later, 0.0)
    assert receiver.on_rtp(sender(97, 3, 0xF00E, (500).to_bytes(2, "big") + IDR, 9000), later + 0.01, 0.0)
    assert (receiver.ssrc, receiver.rtx_ssrc, receiver.counters()["foreign"]) == (0xF00D, 0xF00E, 0)


def test_a_track_without_retransmissions_keeps_one_nack_per_gap_and_ignores_rtx():
    media = parse_sdp(RTX_SDP.replace("a=rtpmap:97 rtx/90000\n", "")).media[0]
    receiver = TrackReceiver(media, RecordingPublisher(), "test", SessionClock(), 1)
    assert media.rtx_payload_type is None and receiver.jitter.max_nacks == 1
    assert receiver.on_rtp(rtp(96, 1, IDR, SENDER_SSRC), 0.0, 0.0)
    assert receiver.on_rtp(rtp(97, 2, (1).to_bytes(2, "big") + IDR, RTX_SSRC), 0.01, 0.0)  # another format: ignored
    assert receiver.counters()["rtx_received"] == 0 and receiver.jitter.received == 1


# End to end: GStreamer's rtpbin + rtprtxsend through the lossy relay ---------------------

RTX_CLIP_SECONDS = 40  # outlasts the 21 s of playback even when the browsers start late
CLEAN_START_PACKETS = 1000
"""Packets the relay passes untouched first (about 5 s of the clip): mediacore sends RTCP
to where the sender's RTCP comes from, and rtpbin's first report may take 3 s (RFC 3550's
randomised first interval); a loss before it could not be asked for."""
MIN_DECODED_WITH_RTX = 0.99
"""Share of the frames under the playhead that Chromium must decode when the sender repairs
the relay's 2 % loss: a packet is lost for good only if three retransmissions are."""


def gst_rtx_sender(clip: Path, rtp_port: int, rtcp_port: int, feedback_port: int) -> list[str]:
    """gst-launch-1.0 sending the clip's H.264 as RTP in real time, keeping 1 s of packets
    (however many: its default keeps 100, half a second of this stream) in rtprtxsend for
    retransmission (RFC 4588: payload type 97, its own SSRC) and reading the receiver's
    RTCP (NACKs) on `feedback_port`; rtpbin's AVPF profile acts on NACKs. The
    media is paced before the payloader (`identity sync=true`), not at the UDP sink: a
    retransmission carries its original's timestamp, and a sink that syncs would hold it
    back or drop it as late when the machine is busy."""
    pipeline = (
        f"rtpbin name=b rtp-profile=avpf "
        f"filesrc location={clip} ! flvdemux name=d d.video ! queue ! h264parse ! identity sync=true ! "
        f"rtph264pay pt=96 mtu=1400 config-interval=-1 ! "
        f'rtprtxsend payload-type-map="application/x-rtp-pt-map,96=(uint)97" '
        f"max-size-time=1000 max-size-packets=0 ! "
        f"b.send_rtp_sink_0 b.send_rtp_src_0 ! udpsink host=127.0.0.1 port={rtp_port} sync=false async=false "
        f"b.send_rtcp_src_0 ! udpsink host=127.0.0.1 port={rtcp_port} sync=false async=false "
        f"udpsrc address=127.0.0.1 port={feedback_port} ! b.recv_rtcp_sink_0"
    )
    return ["gst-launch-1.0", "-q", *shlex.split(pipeline)]


RTX_INPUT_SDP = """v=0
o=- 0 0 IN IP4 127.0.0.1
s=rtx
t=0 0
m=video {port} RTP/AVPF 96 97
a=rtpmap:96 H264/90000
a=fmtp:96 packetization-mode=1
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96;rtx-time=1000
"""


@pytest.mark.slow
async def test_gstreamer_rtx_sender_repairs_the_loss_and_the_counters_match_the_relay(engine, tmp_path):
    require_tool("gst-launch-1.0")
    clip = make_clip(seconds=RTX_CLIP_SECONDS)
    loop = asyncio.get_running_loop()
    port = free_udp_pair()
    rtp_input = await engine.add_rtp_input("rtx", parse_sdp(RTX_INPUT_SDP.format(port=port)))
    relay = RtpImpairmentRelay(("127.0.0.1", port), seed=3, clean_start=CLEAN_START_PACKETS)
    rtp_t, _ = await loop.create_datagram_endpoint(lambda: relay, local_addr=("127.0.0.1", 0))
    feedback_port = free_port()
    rtcp = RtcpRelay(("127.0.0.1", port + 1), reply_to=("127.0.0.1", feedback_port))
    rtcp_t, _ = await loop.create_datagram_endpoint(lambda: rtcp, local_addr=("127.0.0.1", 0))
    sender = await start_process(
        *gst_rtx_sender(clip, rtp_t.get_extra_info("sockname")[1], rtcp_t.get_extra_info("sockname")[1], feedback_port)
    )
    try:
        await wait_for_playlist(engine.http_port, "rtx", segments=2, timeout=40)
        (receiver,) = rtp_input.receivers.values()  # taken while the input publishes
        report, ll_report = await asyncio.gather(
            play_in_browser(f"http://127.0.0.1:{engine.http_port}/watch/rtx?ll=0", seconds=21),
            play_in_browser(f"http://127.0.0.1:{engine.http_port}/watch/rtx?ll=1", seconds=21),
        )
        # The counters are compared once the sender is done (gst-launch does not exit: its
        # RTCP branch keeps it running) and every gap is settled (filled or given up),
        # before the input unpublishes (10 s without packets).
        await until(lambda: loop.time() - relay.last_received > 1.0, RTX_CLIP_SECONDS, "the sender finishing")
        await until(  # nothing buffered: no gap waits for a retransmission any more
            lambda: (
                len(receiver.jitter) == 0
                and receiver.jitter.released + receiver.jitter.late >= relay.expected(96).delivered
            ),
            5,
            "the jitter buffer releasing every packet",
        )
        metrics = await scrape(engine)
        counters = receiver.counters()
    finally:
        await stop_process(sender)
        rtp_t.close()
        rtcp_t.close()
    decoded, shown = playhead_frames("index.m3u8", report)
    ll_decoded, ll_shown = playhead_frames("ll.m3u8", ll_report)
    media, rtx = relay.expected(96), relay.expected(97)
    nacked = [s for data in rtcp.from_receiver for p in parse_rtcp(data) if isinstance(p, Nack) for s in p.lost]
    print(
        f"index.m3u8: decoded {decoded} of {shown:.0f} frames under the playhead ({decoded / shown:.1%}); "
        f"ll.m3u8: {ll_decoded} of {ll_shown:.0f} ({ll_decoded / ll_shown:.1%}); relay dropped "
        f"{len(media.lost_sequences)} media and {len(rtx.lost_sequences)} retransmission packets; {counters}"
    )
    assert decoded >= MIN_DECODED_WITH_RTX * shown and report["advanced"] >= 10.0, report
    assert ll_decoded >= MIN_DECODED_WITH_RTX * ll_shown and ll_report["advanced"] >= 10.0, ll_report
    # The counters agree with the relay's log: every packet it dropped was asked for, and
    # `nacked` is what the NACKs name; the retransmissions that came are those it
    # delivered; those that filled a gap plus the gaps given up are the packets it dropped
    # (and any original it delayed past the playout delay, counted late as well).
    assert media.lost_sequences and media.lost_sequences <= set(nacked)
    assert counters["nacked"] == len(nacked)
    assert counters["rtx_received"] == rtx.delivered + rtx.duplicates
    lost = len(media.lost_sequences)
    assert lost <= counters["rtx_recovered"] + counters["lost"] <= lost + counters["late"]
    assert counters["lost"] <= lost // 50  # at most 2 % of the loss stays
    for event in ("nacked", "rtx_received", "rtx_recovered", "lost"):
        line = f'mediacore_rtp_packets_total{{event="{event}",media="video",stream="rtx"}}'
        assert f"{line} {float(counters[event])}" in metrics or f"{line} {counters[event]}" in metrics, (event, metrics)
