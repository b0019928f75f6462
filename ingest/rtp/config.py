"""The RTSP server's limits, named once: each bound with its default and the reason for it.

The app's configuration uses this dataclass as its [rtsp] section.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RtspConfig:
    udp_port_min: int = 30000
    """First server UDP port for RTP/RTCP pairs (RTP even, RTCP the next one)."""
    udp_port_max: int = 30999
    """Last server UDP port; 500 pairs, two per published track."""
    record_timeout: float = 10.0
    """Seconds a connection may take from connecting to RECORD before it is closed."""
    session_timeout: float = 30.0
    """Seconds without RTSP or RTP data before a publishing session is closed."""
    max_connections: int = 1000
    """RTSP connections open at once; past it a new one is closed at once (as [rtmp]): above
    the UDP range's 250 two-track sessions, with room for TCP publishers and for connections
    still setting up."""
    max_connections_per_ip: int = 20
    """RTSP connections open at once from one address (as [rtmp]): a studio or gateway behind
    one NAT runs a handful of encoders; a flood from one host must not take the listener."""
    max_write_buffer: int = 1024 * 1024
    """Bytes of replies and interleaved RTCP a connection may leave unread before it is
    closed: a peer that sends requests and never reads cannot grow the server's memory."""
    tls_port: int = 0
    """Port of the RTSPS listener (RTSP inside TLS, `rtsps://`), beside the plain one; 0 leaves
    it off. Needs [server] tls_cert and tls_key. Every limit above applies to it as well.
    Media goes inside the TLS connection only with TCP interleaving; UDP RTP stays plain."""
    video_repair: str = "off"
    """What H.264 video published over RTSP gets under packet loss: "off" passes it as sent
    and freezes it from a damaged reference frame to the next keyframe that arrives whole;
    "reencode" decodes it with error concealment and re-encodes it (ingest/rtp/repair.py),
    so it keeps moving with artifacts, for about an eighth of a core per 720p30 stream."""
    video_repair_bitrate: int = 2_500_000
    """Bits per second of the re-encoded video when `video_repair` is "reencode": about the
    sources' (below it the picture blurs, above it only the bandwidth grows)."""
    tls_handshake_timeout: float = 10.0
    """Seconds a connection to the RTSPS port may take to complete its TLS handshake before it
    is dropped: a client that opens TCP and never finishes TLS holds a socket and TLS state
    that no other limit sees (the connection caps count a connection once TLS is up)."""


VIDEO_REPAIR_MODES = ("off", "reencode")
"""The values of `video_repair` ([rtsp], [[rtp.inputs]])."""


def repair_bitrate(mode: str, bitrate: int) -> int | None:
    """The bitrate a TrackReceiver repairs video at for a `video_repair` setting (None: off)."""
    return bitrate if mode == "reencode" else None


TICK_SECONDS = 0.02
"""Period of each RTP session's timer: releases packets whose playout deadline passed and
sends NACKs; 20 ms is below the jitter buffer's smallest delay."""
REPORT_INTERVAL = 1.0
"""Seconds between RTCP receiver reports (RFC 3550 allows 5 s; viewers of the stats want fresher)."""
PLI_INTERVAL = 0.5
"""Least seconds between two Picture Loss Indications while video waits for a keyframe."""
TEARDOWN_LINGER = 0.3
"""Seconds to keep collecting UDP after TEARDOWN: datagrams sent just before it may still be in flight."""
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
"""SO_RCVBUF of RTP sockets: a burst of a 4K keyframe must not overflow the kernel's buffer."""
SOURCE_SILENCE = 2.0
"""Seconds the locked source of a track (its UDP address, its SSRC) must stay silent before
another may take its place: longer than any pause in a live sender's packets, short enough
that a sender that restarts (new port, new SSRC) is back within a GOP or so."""
PUBLISH_RETRY = 1.0
"""Seconds a raw RTP input waits before trying again to publish a name that is busy."""
RTX_PLAYOUT_DELAY = 1.0
"""Least playout delay, seconds, of a track whose sender retransmits (RFC 4588, announced
in the SDP): a lost packet is asked for after the 20 ms NACK dwell and again every
NACK_INTERVAL, and each answer takes a round trip plus the sender's own delay, which for
GStreamer's rtprtxsend was up to 400 ms on a busy machine; 1 s holds three asks and their
answers. Lowered to the SDP's rtx-time when that is shorter (the sender keeps packets no
longer). The cost is latency: this much more between the sender and the segments."""
RTX_MAX_NACKS = 3
"""Times one missing packet is asked for from a sender that retransmits: a NACK or its
retransmission may be lost as well (at 2 % loss, three asks leave about one lost packet in
a hundred thousand unrepaired)."""
NACK_INTERVAL = 0.25
"""Least seconds between two NACKs for the same packet from a sender that retransmits: a
round trip plus the sender's delay, so a retransmission under way is not asked for twice
(GStreamer's rtprtxsend answered in 0-400 ms through the test relay on a busy machine;
sooner asks mostly bring duplicates)."""
