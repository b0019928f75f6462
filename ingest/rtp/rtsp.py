"""RTSP (RFC 2326) message framing, sans-I/O: requests and interleaved binary frames in,
responses out. Sizes are checked before buffering: request line, header block, body."""

from __future__ import annotations

from dataclasses import dataclass

from mediacore.model.names import without_query

from .errors import RtpError

MAX_REQUEST_LINE = 4096
MAX_HEADER_BYTES = 16384
MAX_BODY = 16384


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    uri: str
    headers: dict[str, str]
    body: bytes

    @property
    def cseq(self) -> str:
        return self.headers.get("cseq", "0")


@dataclass(frozen=True, slots=True)
class Interleaved:
    channel: int
    data: bytes


class RtspParser:
    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Request | Interleaved]:
        self._buf += data
        out: list[Request | Interleaved] = []
        buf = self._buf
        while buf:
            if buf[0] == 0x24:  # '$': an interleaved RTP/RTCP frame (RFC 2326 10.12)
                if len(buf) < 4:
                    break
                size = int.from_bytes(buf[2:4], "big")
                if len(buf) < 4 + size:
                    break
                out.append(Interleaved(buf[1], bytes(buf[4 : 4 + size])))
                del buf[: 4 + size]
                continue
            line_end = buf.find(b"\r\n", 0, MAX_REQUEST_LINE + 2)
            if line_end < 0:
                if len(buf) > MAX_REQUEST_LINE:
                    raise RtpError(f"RTSP request line longer than {MAX_REQUEST_LINE} bytes")
                break
            end = buf.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise RtpError(f"RTSP headers longer than {MAX_HEADER_BYTES} bytes")
                break
            head = bytes(buf[:end]).decode("utf-8", errors="replace").split("\r\n")
            parts = head[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("RTSP/"):
                raise RtpError(f"malformed RTSP request line {without_query(head[0][:80])!r}")
            headers: dict[str, str] = {}
            for line in head[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise RtpError(f"malformed RTSP header {without_query(line[:80])!r}")
                headers[name.strip().lower()] = value.strip()
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError as e:
                raise RtpError("RTSP Content-Length is not a number") from e
            if not 0 <= length <= MAX_BODY:
                raise RtpError(f"RTSP body of {length} bytes exceeds the limit of {MAX_BODY}")
            if len(buf) < end + 4 + length:
                break
            out.append(Request(parts[0], parts[1], headers, bytes(buf[end + 4 : end + 4 + length])))
            del buf[: end + 4 + length]
        return out


def response(cseq: str, status: int, reason: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"RTSP/1.0 {status} {reason}", f"CSeq: {cseq}", "Server: mediacore"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def interleaved(channel: int, data: bytes) -> bytes:
    return b"$" + bytes((channel,)) + len(data).to_bytes(2, "big") + data
