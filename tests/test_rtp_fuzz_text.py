"""Hypothesis fuzzing of the text parsers a publisher controls: SDP and RTSP framing (the
RTP and RTCP parsers are fuzzed in test_rtp_core.py). Whatever the input, a parser returns
or raises RtpError; it never raises anything else and never holds more than its limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_rtp_depacketize import FFMPEG_SDP

from ingest.rtp.errors import RtpError
from ingest.rtp.rtsp import MAX_HEADER_BYTES, Interleaved, Request, RtspParser
from ingest.rtp.sdp import MAX_SDP_BYTES, check_ingestible, parse_sdp
from ingest.rtp.session import RtspSession

SDP_LINES = FFMPEG_SDP.splitlines()

sdp_line = st.one_of(
    st.sampled_from(SDP_LINES),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from("vosctmab"), st.text(max_size=80)),
    st.builds(
        lambda pt, enc, rate, ch: f"a=rtpmap:{pt} {enc}/{rate}/{ch}",
        st.integers(-5, 300),
        st.sampled_from(["H264", "opus", "MPEG4-GENERIC", "VP8", ""]),
        st.integers(-1, 10**7),
        st.integers(-1, 99),
    ),
    st.builds(
        lambda kind, port, pt: f"m={kind} {port} RTP/AVP {pt}",
        st.sampled_from(["video", "audio", "text"]),
        st.integers(-1, 70000),
        st.integers(-1, 300),
    ),
    st.builds(lambda pt, params: f"a=fmtp:{pt} {params}", st.integers(0, 127), st.text(max_size=120)),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(sdp_line, max_size=40))
def test_sdp_parser_returns_or_raises_rtp_error(lines):
    try:
        sdp = parse_sdp("\r\n".join(lines))
    except RtpError:
        return
    for media in sdp.media:
        assert 0 <= media.payload_type <= 127 and 0 <= media.port <= 65535
        assert media.encoding and 1000 <= media.clock_rate <= 192000 and 1 <= media.channels <= 8
        try:
            media.sprop_parameter_sets, media.aac_config
        except RtpError:
            pass
    try:
        check_ingestible(sdp)
    except RtpError:
        pass


def test_oversized_sdp_is_refused_before_parsing():
    try:
        parse_sdp("a=x\r\n" * (MAX_SDP_BYTES // 5 + 1))
    except RtpError as e:
        assert "exceeds the limit" in str(e)
    else:
        raise AssertionError("an oversized SDP was parsed")


rtsp_chunk = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"OPTIONS rtsp://h/live/x RTSP/1.0\r\nCSeq: 1\r\n\r\n",
            b"$\x00\x00\x04abcd",
            b"$\x01\xff\xff",
            b"ANNOUNCE rtsp://h/live/x RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 5\r\n\r\nv=0\r\n",
            b"Content-Length: -1\r\n",
            b"\r\n\r\n",
            b"SETUP * RTSP/1.0\r\n",
        ]
    ),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(rtsp_chunk, max_size=30))
def test_rtsp_parser_and_session_return_or_raise_rtp_error(chunks):
    parser = RtspParser()
    session = RtspSession(lambda: (30000, 30001))
    try:
        for chunk in chunks:
            for item in parser.feed(chunk):
                assert isinstance(item, (Request, Interleaved))
                if isinstance(item, Request):
                    assert isinstance(session.handle(item), bytes)
                    if session.pending is not None:
                        assert isinstance(session.decide_announce(), bytes)
            assert len(parser._buf) <= MAX_HEADER_BYTES + 4 + 65536 + 4 + 1_048_576
    except RtpError:
        pass
