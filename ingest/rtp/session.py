"""RTSP publish session (RFC 2326 ANNOUNCE/RECORD), sans-I/O.

Rules: OPTIONS any time; ANNOUNCE with an SDP for `rtsp://HOST/live/STREAM[?key=K]`;
SETUP once per announced media before RECORD, UDP (client_port pair, ports 1-65535) or TCP
interleaved (an even channel and the next, 0-255): 461 Unsupported Transport for anything
else, 455 for a second SETUP of a media (one UDP port pair per track); RECORD once every
media is set up; GET_PARAMETER / SET_PARAMETER keep the session alive; TEARDOWN ends it.
The shell supplies the decisions that need the world: which UDP ports (a callable), and may
this name publish with this key: an ANNOUNCE that passes every check here waits in
`pending` until the shell calls decide_announce() with its answer (it may take a round trip
to a publish hook). Everything else is decided here.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mediacore.model.names import PUBLISH_APP, split_publish_name, stream_name_problem, without_query

from .errors import RtpError
from .rtsp import Request, response
from .sdp import SessionDescription, check_ingestible, parse_sdp

PUBLIC = "OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
MAX_CHANNEL = 255
"""Highest interleaved channel: the channel is the one byte after '$' (RFC 2326 10.12)."""
MAX_PORT = 65535
PROFILES = ("RTP/AVP", "RTP/AVP/UDP", "RTP/AVP/TCP")
_RANGE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")


class TransportError(RtpError):
    """A SETUP's Transport header asks for something this server does not take (461)."""


@dataclass(frozen=True, slots=True)
class TransportChoice:
    tcp: bool
    channels: tuple[int, int] | None = None  # TCP: the interleaved pair asked for, if any
    client_ports: tuple[int, int] = (0, 0)  # UDP: the client's RTP and RTCP ports


def _pair(name: str, value: str) -> tuple[int, int]:
    """`a-b` or `a` (meaning a, a + 1), as RFC 2326 12.39 writes channel and port ranges."""
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        raise TransportError(f"{name}={value[:40]!r} is not a number or a range")
    first = int(match.group(1))
    return first, int(match.group(2)) if match.group(2) is not None else first + 1


def _spec(spec: str) -> TransportChoice:
    parts = [p.strip() for p in spec.split(";")]
    profile = parts[0].upper()
    if profile not in PROFILES:
        raise TransportError(f"transport {parts[0][:40]!r} is not RTP/AVP over UDP or TCP")
    params: dict[str, str] = {}
    for part in parts[1:]:
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    if "multicast" in params:
        raise TransportError("multicast is not taken for publishing")
    mode = params.get("mode", "record").lower()
    if mode != "record":
        raise TransportError(f"mode={mode[:20]} (a publish is mode=record)")
    if profile.endswith("/TCP") or "interleaved" in params:
        if "interleaved" not in params:
            return TransportChoice(True)
        rtp, rtcp = _pair("interleaved", params["interleaved"])
        if not (rtcp <= MAX_CHANNEL and rtp % 2 == 0 and rtcp == rtp + 1):
            raise TransportError(
                f"interleaved channels {rtp}-{rtcp}: an even channel and the next, within 0-{MAX_CHANNEL}"
            )
        return TransportChoice(True, channels=(rtp, rtcp))
    if "client_port" not in params:
        raise TransportError("UDP transport without client_port")
    ports = _pair("client_port", params["client_port"])
    if not all(1 <= port <= MAX_PORT for port in ports):
        raise TransportError(f"client ports {ports[0]}-{ports[1]} out of 1-{MAX_PORT}")
    return TransportChoice(False, client_ports=ports)


def parse_transport(header: str) -> TransportChoice:
    """The first transport of a SETUP's Transport header (RFC 2326 12.39: alternatives
    separated by commas, in the client's order of preference) that this server takes:
    RTP/AVP unicast over UDP with a client_port pair (1-65535), or over TCP with an even
    interleaved channel and the next (0-255). Raises TransportError naming what is wrong
    with the first alternative when none is taken."""
    first: TransportError | None = None
    for spec in header.split(","):
        try:
            return _spec(spec)
        except TransportError as e:
            first = first or e
    raise first or TransportError("no Transport header")


@dataclass(frozen=True, slots=True)
class PendingAnnounce:
    """An ANNOUNCE awaiting the shell's decision."""

    cseq: str
    name: str
    key: str = field(repr=False)  # never in a repr, so never in a log line
    sdp: SessionDescription


@dataclass(slots=True)
class TrackSetup:
    index: int
    tcp: bool
    client_ports: tuple[int, int] = (0, 0)
    channels: tuple[int, int] = (0, 1)
    server_ports: tuple[int, int] = (0, 0)


class RtspSession:
    def __init__(self, allocate_ports: Callable[[], tuple[int, int]]) -> None:
        """allocate_ports() returns a (rtp, rtcp) pair of bound server UDP ports."""
        self.allocate_ports = allocate_ports
        self.pending: PendingAnnounce | None = None
        self.session_id = secrets.token_hex(8)
        self.stream_name = ""
        self.sdp: SessionDescription | None = None
        self.tracks: dict[int, TrackSetup] = {}
        self.recording = False
        self.closed = False
        self.refusals = 0  # requests refused for what they asked (a bad Transport, a repeated SETUP)
        self.refusal = ""  # why the latest one was refused, for the shell's log

    def handle(self, req: Request) -> bytes:
        method = req.method
        if method == "OPTIONS":
            return response(req.cseq, 200, "OK", {"Public": PUBLIC})
        if method == "ANNOUNCE":
            return self._announce(req)
        if method == "SETUP":
            return self._setup(req)
        if method == "RECORD":
            if self.sdp is None or len(self.tracks) < len(self.sdp.media):
                return response(req.cseq, 455, "Method Not Valid in This State")
            self.recording = True
            return response(req.cseq, 200, "OK", {"Session": self.session_id})
        if method in ("GET_PARAMETER", "SET_PARAMETER"):
            return response(req.cseq, 200, "OK", {"Session": self.session_id})
        if method == "TEARDOWN":
            self.closed = True
            return response(req.cseq, 200, "OK", {"Session": self.session_id})
        if method in ("DESCRIBE", "PLAY", "PAUSE"):
            return response(req.cseq, 405, "Method Not Allowed", {"Allow": PUBLIC})
        return response(req.cseq, 501, "Not Implemented")

    def _announce(self, req: Request) -> bytes:
        if self.sdp is not None or self.pending is not None:
            return response(req.cseq, 455, "Method Not Valid in This State")
        path = urlsplit(req.uri).path.strip("/")
        query = urlsplit(req.uri).query
        app, _, raw = path.partition("/")
        if app != PUBLISH_APP:
            # The path only: the query may hold the publish key, which never goes to a log.
            shown = "/" + path[:100]
            raise RtpError(f"ANNOUNCE for {shown!r}: publish to rtsp://HOST/{PUBLISH_APP}/STREAM")
        name, params = split_publish_name(raw + ("?" + query if query else ""))
        problem = stream_name_problem(name)
        if problem is not None:
            raise RtpError(problem)
        sdp = parse_sdp(req.body.decode("utf-8", errors="replace"))
        check_ingestible(sdp)
        self.stream_name = name
        self.pending = PendingAnnounce(req.cseq, name, params.get("key", ""), sdp)
        return b""

    def decide_announce(self, status: int = 200, reason: str = "OK") -> bytes:
        """The shell's answer to the pending ANNOUNCE: 200 accepts it; any other status (401
        Unauthorized, 453 for a name already being published) refuses it and ends the session."""
        pending = self.pending
        if pending is None:
            raise RtpError("no ANNOUNCE awaits a decision")
        self.pending = None
        if status != 200:
            self.closed = True
            return response(pending.cseq, status, reason)
        self.sdp = pending.sdp
        return response(pending.cseq, 200, "OK")

    def _setup(self, req: Request) -> bytes:
        if self.sdp is None or self.recording:
            return self._refuse(req, 455, "Method Not Valid in This State", "SETUP before ANNOUNCE or after RECORD")
        index = self._track_for(req.uri)
        if index in self.tracks:
            # One port pair per track: a repeated SETUP would bind another pair each time.
            # Refused as gortsplib (MediaMTX) refuses it ("media has already been setup").
            return self._refuse(req, 455, "Method Not Valid in This State", f"media {index} is already set up")
        try:
            choice = parse_transport(req.headers.get("transport", ""))
            channels = self._channels_for(index, choice.channels) if choice.tcp else (0, 1)
        except TransportError as e:
            return self._refuse(req, 461, "Unsupported Transport", f"SETUP of media {index}: {e}")
        if choice.tcp:
            setup = TrackSetup(index, True, channels=channels)
            reply = f"RTP/AVP/TCP;unicast;interleaved={channels[0]}-{channels[1]};mode=record"
        else:
            ports = choice.client_ports
            server_ports = self.allocate_ports()
            setup = TrackSetup(index, False, client_ports=ports, server_ports=server_ports)
            reply = (
                f"RTP/AVP;unicast;client_port={ports[0]}-{ports[1]};"
                f"server_port={server_ports[0]}-{server_ports[1]};mode=record"
            )
        self.tracks[index] = setup
        return response(req.cseq, 200, "OK", {"Transport": reply, "Session": f"{self.session_id};timeout=60"})

    def _channels_for(self, index: int, asked: tuple[int, int] | None) -> tuple[int, int]:
        """The interleaved pair of a TCP track: the one asked for, if no other track uses
        it, or else the first free even pair from 2 * index."""
        used = {c for setup in self.tracks.values() if setup.tcp for c in setup.channels}
        if asked is not None:
            if used & set(asked):
                raise TransportError(f"interleaved channels {asked[0]}-{asked[1]} are already in use")
            return asked
        first = next(c for c in range(2 * index, MAX_CHANNEL, 2) if c not in used and c + 1 not in used)
        return first, first + 1

    def _refuse(self, req: Request, status: int, reason: str, why: str) -> bytes:
        self.refusals += 1
        self.refusal = why
        return response(req.cseq, status, reason)

    def _track_for(self, uri: str) -> int:
        assert self.sdp is not None
        for i, media in enumerate(self.sdp.media):
            if media.control and uri.rstrip("/").endswith(media.control.split("/")[-1]):
                return i
        if len(self.sdp.media) == 1:
            return 0
        raise RtpError(f"SETUP for {without_query(uri[:100])!r} names no announced media")
