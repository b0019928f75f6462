"""RTSP publish session (RFC 2326 ANNOUNCE/RECORD), sans-I/O.

Rules: OPTIONS any time; ANNOUNCE with an SDP for `rtsp://HOST/live/STREAM[?key=K]`;
SETUP per announced media, UDP (client_port pair) or TCP interleaved (channel pair);
RECORD once every media is set up; GET_PARAMETER / SET_PARAMETER keep the session alive;
TEARDOWN ends it. The shell supplies the decisions that need the world (may this name
publish? which UDP ports?) as callables; everything else is decided here.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from mediacore.model.names import PUBLISH_APP, split_publish_name, stream_name_problem

from .errors import RtpError
from .rtsp import Request, response
from .sdp import SessionDescription, check_ingestible, parse_sdp

PUBLIC = "OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER"


@dataclass(slots=True)
class TrackSetup:
    index: int
    tcp: bool
    client_ports: tuple[int, int] = (0, 0)
    channels: tuple[int, int] = (0, 1)
    server_ports: tuple[int, int] = (0, 0)


class RtspSession:
    def __init__(
        self, authorize: Callable[[str, str], str | None], allocate_ports: Callable[[], tuple[int, int]]
    ) -> None:
        """authorize(name, key) returns None to accept or a reason to refuse;
        allocate_ports() returns a (rtp, rtcp) pair of bound server UDP ports."""
        self.authorize = authorize
        self.allocate_ports = allocate_ports
        self.session_id = secrets.token_hex(8)
        self.stream_name = ""
        self.sdp: SessionDescription | None = None
        self.tracks: dict[int, TrackSetup] = {}
        self.recording = False
        self.closed = False

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
        if self.sdp is not None:
            return response(req.cseq, 455, "Method Not Valid in This State")
        path = urlsplit(req.uri).path.strip("/")
        query = urlsplit(req.uri).query
        app, _, raw = path.partition("/")
        if app != PUBLISH_APP:
            raise RtpError(f"ANNOUNCE for {req.uri[:100]!r}: publish to rtsp://HOST/{PUBLISH_APP}/STREAM")
        name, params = split_publish_name(raw + ("?" + query if query else ""))
        problem = stream_name_problem(name)
        if problem is not None:
            raise RtpError(problem)
        sdp = parse_sdp(req.body.decode("utf-8", errors="replace"))
        check_ingestible(sdp)
        refusal = self.authorize(name, params.get("key", ""))
        if refusal is not None:
            self.closed = True
            return response(req.cseq, 401 if "key" in refusal else 453, refusal.split(":")[0])
        self.stream_name = name
        self.sdp = sdp
        return response(req.cseq, 200, "OK")

    def _setup(self, req: Request) -> bytes:
        if self.sdp is None:
            return response(req.cseq, 455, "Method Not Valid in This State")
        index = self._track_for(req.uri)
        transport = req.headers.get("transport", "")
        if "mode=play" in transport.lower():
            return response(req.cseq, 461, "Unsupported Transport")
        interleaved = re.search(r"interleaved=(\d+)-(\d+)", transport)
        client = re.search(r"client_port=(\d+)-(\d+)", transport)
        if "TCP" in transport.upper().split(";")[0] or interleaved:
            channels = (
                (int(interleaved.group(1)), int(interleaved.group(2))) if interleaved else (2 * index, 2 * index + 1)
            )
            setup = TrackSetup(index, True, channels=channels)
            reply = f"RTP/AVP/TCP;unicast;interleaved={channels[0]}-{channels[1]};mode=record"
        elif client:
            ports = (int(client.group(1)), int(client.group(2)))
            server_ports = self.allocate_ports()
            setup = TrackSetup(index, False, client_ports=ports, server_ports=server_ports)
            reply = (
                f"RTP/AVP;unicast;client_port={ports[0]}-{ports[1]};"
                f"server_port={server_ports[0]}-{server_ports[1]};mode=record"
            )
        else:
            return response(req.cseq, 461, "Unsupported Transport")
        self.tracks[index] = setup
        return response(req.cseq, 200, "OK", {"Transport": reply, "Session": f"{self.session_id};timeout=60"})

    def _track_for(self, uri: str) -> int:
        assert self.sdp is not None
        for i, media in enumerate(self.sdp.media):
            if media.control and uri.rstrip("/").endswith(media.control.split("/")[-1]):
                return i
        if len(self.sdp.media) == 1:
            return 0
        raise RtpError(f"SETUP for {uri[:100]!r} names no announced media")
