"""RTMP server session: the state machine of one publishing connection, sans-I/O.

Rules it follows:
- Handshake first; any byte before C2 completes is handshake data.
- `connect` must come first, for app `live` (the contract's publish URL); its reply is
  Window Acknowledgement Size, Set Peer Bandwidth, Set Chunk Size, then `_result`
  NetConnection.Connect.Success, the order ffmpeg, librtmp (OBS) and GStreamer expect.
- An Enhanced RTMP client lists the video codecs it can send in connect's `fourCcList`.
  Enhanced RTMP v1 asks nothing of the server; v2 says the server SHOULD state its own
  support in the `_result`, so the reply's properties carry `fourCcList` too: the client's
  entries this server takes (`hvc1`, `av01`, `avc1`; ingest/rtmp/flv.py). A wildcard `*`
  from the client is answered with all of them.
- releaseStream / FCPublish / createStream / publish get the replies encoders wait for.
- `publish` yields a PublishRequest event and the session waits in state "pending" until
  the shell answers with accept_publish() or reject_publish() (the decision may take a
  round trip to a publish hook). Media and metadata on the requested message stream are
  passed on while pending too: the shell holds them until its decision, then replays them
  or drops them with the connection. The stream name (and key) come
  from the publish argument, `STREAM?key=K`, or the app's query string.
- Audio, video and @setDataFrame are accepted only on the published message stream.
- An `onCuePoint` data message (the FLV cue point OBS and ffmpeg send: an object with a
  `name` and a `parameters` object) yields a CuePoint event carrying the message's own
  timestamp, so it is pinned to the media timeline, not to its arrival.
- Acknowledgements are sent every window the peer asked for; pings are answered.
- Every message but the audio and video of a publishing session (pings, user control,
  acknowledgements, commands, data) takes a token from a per-connection bucket
  (`max_control_messages_per_second`, `control_message_burst`); an empty bucket is a
  control-message flood. Time comes in with the bytes (`receive_data(data, now)`).
- Any violation raises RtmpError: the shell logs it once and closes this connection only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mediacore.model.names import (
    MAX_PUBLISH_QUERY,
    MAX_STREAM_NAME,
    PUBLISH_APP,
    split_publish_name,
    stream_name_problem,
)
from mediacore.model.rate import TokenBucket

from . import amf0
from .chunk import (
    ACKNOWLEDGEMENT,
    AGGREGATE,
    AUDIO,
    COMMAND_AMF0,
    COMMAND_AMF3,
    DATA_AMF0,
    DATA_AMF3,
    DEFAULT_CHUNK_SIZE,
    SET_CHUNK_SIZE,
    SET_PEER_BANDWIDTH,
    USER_CONTROL,
    VIDEO,
    WINDOW_ACK_SIZE,
    ChunkLimits,
    ChunkReader,
    ChunkWriter,
    Message,
)
from .config import RtmpConfig
from .errors import RtmpError
from .flv import FOURCC_CODECS, iter_aggregate
from .handshake import ServerHandshake

CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_STATUS = 5
PUBLISH_STREAM_ID = 1

USER_STREAM_BEGIN = 0
USER_STREAM_EOF = 1
USER_PING_REQUEST = 6
USER_PING_RESPONSE = 7

_PUBLISHING = ("pending", "publishing")
"""States in which the requested message stream carries media: accepted, or awaiting the decision."""

_DEFAULTS = RtmpConfig()  # every bound is named once, in ingest/rtmp/config.py


@dataclass(frozen=True, slots=True)
class SessionLimits:
    chunk: ChunkLimits = ChunkLimits()
    amf: amf0.AmfLimits = amf0.AmfLimits()
    window_ack_size: int = _DEFAULTS.window_ack_size
    out_chunk_size: int = _DEFAULTS.out_chunk_size
    control_rate: float = _DEFAULTS.max_control_messages_per_second
    control_burst: int = _DEFAULTS.control_message_burst


# Events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    app: str
    tc_url: str
    flash_ver: str


@dataclass(frozen=True, slots=True)
class PublishRequest:
    name: str
    key: str
    publish_type: str


@dataclass(slots=True)
class MediaMessage:
    type_id: int  # AUDIO or VIDEO
    timestamp: int  # 32-bit milliseconds
    payload: bytes


@dataclass(frozen=True, slots=True)
class Metadata:
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CuePoint:
    timestamp: int  # 32-bit milliseconds, the clock of the media messages
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unpublished:
    reason: str


Event = Connected | PublishRequest | MediaMessage | Metadata | CuePoint | Unpublished


class ServerSession:
    def __init__(self, limits: SessionLimits = SessionLimits(), epoch_ms: int = 0) -> None:
        self.limits = limits
        self._handshake = ServerHandshake(epoch_ms)
        self._reader = ChunkReader(limits.chunk)
        self._writer = ChunkWriter(DEFAULT_CHUNK_SIZE)  # the spec's size until we announce ours
        self._out = bytearray()
        self.state = "handshake"  # handshake, connecting, connected, pending, publishing, closed
        self.app = ""
        self.app_params: dict[str, str] = {}
        self.fourcc_list: list[str] = []  # the client's connect fourCcList
        self.stream_name = ""
        self._peer_window = 0
        self._acked = 0
        self._stream_ids: set[int] = set()
        self._control = TokenBucket(limits.control_rate, limits.control_burst)
        self.control_messages = 0  # messages other than a publishing session's media

    # Output --------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _send(self, csid: int, type_id: int, stream_id: int, payload: bytes) -> None:
        self._out += self._writer.write(csid, type_id, stream_id, 0, payload)

    def _command(self, stream_id: int, *values: Any) -> None:
        csid = CSID_COMMAND if stream_id == 0 else CSID_STATUS
        self._send(csid, COMMAND_AMF0, stream_id, amf0.encode(*values))

    def _user_control(self, event: int, value: int) -> None:
        self._send(CSID_CONTROL, USER_CONTROL, 0, event.to_bytes(2, "big") + value.to_bytes(4, "big"))

    def _status(self, level: str, code: str, description: str, **extra: Any) -> None:
        info = {"level": level, "code": code, "description": description, **extra}
        self._command(PUBLISH_STREAM_ID, "onStatus", 0, None, info)

    # Input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float = 0.0) -> list[Event]:
        """Feed bytes received at `now` (monotonic seconds; only the control-message bound
        reads it); returns the events they complete."""
        if self.state == "closed":
            return []
        if self.state == "handshake":
            self._out += self._handshake.feed(data)
            if not self._handshake.done:
                return []
            self.state = "connecting"
            data = self._handshake.leftover
            if not data:
                return []
        events: list[Event] = []
        for msg in self._reader.feed(data):
            self._handle(msg, events, now)
        self._maybe_ack()
        return events

    def _maybe_ack(self) -> None:
        total = self._reader.bytes_received
        if self._peer_window and total - self._acked >= self._peer_window:
            self._acked = total
            self._send(CSID_CONTROL, ACKNOWLEDGEMENT, 0, (total & 0xFFFFFFFF).to_bytes(4, "big"))

    def _handle(self, msg: Message, events: list[Event], now: float) -> None:
        t = msg.type_id
        publishing = self.state in _PUBLISHING and msg.stream_id in self._stream_ids
        if publishing and (t == VIDEO or t == AUDIO or t == AGGREGATE):
            pass  # media of the published stream: never limited here
        else:
            self.control_messages += 1
            if not self._control.take(now):
                limits = self.limits
                raise RtmpError(
                    f"control message flood: {self.control_messages} messages other than media, more than "
                    f"{limits.control_rate:g} per second after a burst of {limits.control_burst}"
                )
        if t == VIDEO or t == AUDIO:
            if publishing:
                events.append(MediaMessage(t, msg.timestamp, msg.payload))
            return
        if t == COMMAND_AMF0 or t == COMMAND_AMF3:
            body = msg.payload[1:] if t == COMMAND_AMF3 and msg.payload[:1] == b"\x00" else msg.payload
            self._on_command(msg.stream_id, amf0.decode(body, self.limits.amf), events)
            return
        if t == DATA_AMF0 or t == DATA_AMF3:
            body = msg.payload[1:] if t == DATA_AMF3 and msg.payload[:1] == b"\x00" else msg.payload
            if self.state in _PUBLISHING:
                self._on_data(amf0.decode(body, self.limits.amf), msg.timestamp, events)
            return
        if t == AGGREGATE:
            if self.state not in _PUBLISHING:
                return
            subs = iter_aggregate(msg.payload)
            base = subs[0][1] if subs else 0
            for sub_type, ts, body in subs:
                if sub_type in (AUDIO, VIDEO):
                    events.append(MediaMessage(sub_type, (msg.timestamp + ts - base) & 0xFFFFFFFF, body))
            return
        if t == WINDOW_ACK_SIZE:
            if len(msg.payload) < 4:
                raise RtmpError("Window Acknowledgement Size message shorter than 4 bytes")
            self._peer_window = int.from_bytes(msg.payload[:4], "big")
            return
        if t == USER_CONTROL:
            if len(msg.payload) >= 6 and int.from_bytes(msg.payload[:2], "big") == USER_PING_REQUEST:
                self._user_control(USER_PING_RESPONSE, int.from_bytes(msg.payload[2:6], "big"))
            return
        # Set Chunk Size and Abort were applied by the reader; Acknowledgement and Set Peer
        # Bandwidth from a publisher need no action; unknown types are ignored as the spec allows.

    def _on_command(self, stream_id: int, values: list[Any], events: list[Event]) -> None:
        if not values or not isinstance(values[0], str):
            raise RtmpError("command message without a command name")
        name = values[0]
        txid = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        args = values[2:]
        if self.state == "connecting":
            if name != "connect":
                raise RtmpError(f"command {name!r} before connect")
            self._on_connect(txid, args[0] if args and isinstance(args[0], dict) else {}, events)
            return
        if name == "connect":
            raise RtmpError("second connect on one connection")
        if name in ("releaseStream", "FCPublish"):
            stream = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            if name == "FCPublish":
                self._command(0, "onFCPublish", 0, None, {"code": "NetStream.Publish.Start", "description": stream})
            if txid:
                self._command(0, "_result", txid, None, amf0.UNDEFINED_VALUE)
        elif name == "createStream":
            if len(self._stream_ids) >= 1:
                raise RtmpError("only one stream per connection may be created")
            self._stream_ids.add(PUBLISH_STREAM_ID)
            self._command(0, "_result", txid, None, float(PUBLISH_STREAM_ID))
        elif name == "publish":
            self._on_publish(stream_id, args, events)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            if self.state in _PUBLISHING:
                self.state = "connected"
                if name == "FCUnpublish":
                    self._command(0, "onFCUnpublish", 0, None, {"code": "NetStream.Unpublish.Success"})
                events.append(Unpublished(name))
        elif name == "play":
            self._status("error", "NetStream.Play.Failed", "playback over RTMP is not offered; use HLS")
        elif name in ("_checkbw", "getStreamLength", "_error", "_result", "onBWDone", "receiveAudio", "receiveVideo"):
            pass
        # Other commands are ignored: the spec lets a server skip what it does not offer.

    def _on_connect(self, txid: float, command: dict[str, Any], events: list[Event]) -> None:
        raw_app = str(command.get("app", ""))
        app, params = split_publish_name(raw_app.strip("/"))
        tc_url = str(command.get("tcUrl", ""))
        if app != PUBLISH_APP:
            self._command(
                0,
                "_error",
                txid,
                None,
                {"level": "error", "code": "NetConnection.Connect.Rejected", "description": f"unknown app {app!r}"},
            )
            raise RtmpError(f"connect to unknown app {app!r} (publish to rtmp://HOST/{PUBLISH_APP}/STREAM)")
        self.app = app
        self.app_params = params
        limits = self.limits
        self._send(CSID_CONTROL, WINDOW_ACK_SIZE, 0, limits.window_ack_size.to_bytes(4, "big"))
        self._send(CSID_CONTROL, SET_PEER_BANDWIDTH, 0, limits.window_ack_size.to_bytes(4, "big") + b"\x02")
        self._send(CSID_CONTROL, SET_CHUNK_SIZE, 0, limits.out_chunk_size.to_bytes(4, "big"))
        self._writer.chunk_size = limits.out_chunk_size
        properties: dict[str, Any] = {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}
        offered = command.get("fourCcList")
        if isinstance(offered, list):
            self.fourcc_list = [str(f) for f in offered if isinstance(f, str)]
            wildcard = "*" in self.fourcc_list
            properties["fourCcList"] = [f for f in FOURCC_CODECS if wildcard or f in self.fourcc_list]
        self._command(
            0,
            "_result",
            txid,
            properties,
            {
                "level": "status",
                "code": "NetConnection.Connect.Success",
                "description": "Connection succeeded.",
                "objectEncoding": float(command.get("objectEncoding", 0.0) or 0.0),
            },
        )
        self.state = "connected"
        events.append(Connected(app, tc_url, str(command.get("flashVer", ""))))

    def _on_publish(self, stream_id: int, args: list[Any], events: list[Event]) -> None:
        if self.state in _PUBLISHING:
            raise RtmpError("publish while already publishing")
        if stream_id not in self._stream_ids:
            raise RtmpError(f"publish on message stream {stream_id}, which was never created")
        raw = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        publish_type = args[2] if len(args) > 2 and isinstance(args[2], str) else "live"
        if len(raw) > MAX_STREAM_NAME + MAX_PUBLISH_QUERY:
            self._reject_name()
            raise RtmpError(f"stream name of {len(raw)} characters exceeds the limit of {MAX_STREAM_NAME}")
        name, params = split_publish_name(raw)
        problem = stream_name_problem(name)
        if problem is not None:
            self._reject_name()
            raise RtmpError(problem)
        key = params.get("key") or self.app_params.get("key", "")
        self.stream_name = name
        self.state = "pending"
        events.append(PublishRequest(name, key, publish_type))

    def _reject_name(self) -> None:
        self._status("error", "NetStream.Publish.BadName", "stream name is not allowed")

    def accept_publish(self) -> None:
        """The shell accepted the PublishRequest: start the stream. (If the peer unpublished
        while the decision was pending, the session stays connected: the shell replays that
        Unpublished event after this.)"""
        if self.state == "pending":
            self.state = "publishing"
        self._user_control(USER_STREAM_BEGIN, PUBLISH_STREAM_ID)
        self._status(
            "status",
            "NetStream.Publish.Start",
            f"{self.stream_name} is now published.",
            details=self.stream_name,
        )

    def reject_publish(self, code: str, description: str) -> None:
        """The shell refused the PublishRequest; it should close after sending this."""
        self._status("error", code, description)
        self.state = "closed"

    def _on_data(self, values: list[Any], timestamp: int, events: list[Event]) -> None:
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            events.append(Metadata(dict(values[1])))
        elif len(values) >= 2 and values[0] == "onCuePoint" and isinstance(values[1], dict):
            cue = values[1]
            name = cue.get("name")
            parameters = cue.get("parameters")
            if isinstance(name, str):
                events.append(CuePoint(timestamp, name, dict(parameters) if isinstance(parameters, dict) else {}))

    def close(self) -> list[Event]:
        """The transport closed: a publishing session becomes an unpublish."""
        was_publishing = self.state == "publishing"
        self.state = "closed"
        return [Unpublished("connection closed")] if was_publishing else []
