"""Signed playback tokens: the one rule for signing and checking them, used by the origin, the
edge and `mediacore sign-url`. Sans-I/O: the current time (seconds since the epoch) is passed in.

A token is `EXPIRY.VIEWER.SIG`, carried as the query parameter `token`:

- EXPIRY: when the token stops being valid, whole seconds since the epoch (decimal digits);
- VIEWER: an optional viewer id (letters, digits, `-`, `_`; at most MAX_VIEWER characters),
  empty when the token is not issued to anyone in particular;
- SIG: HMAC-SHA256 with the secret over the stream name, EXPIRY and VIEWER, base64url without
  padding (43 characters).

The token is bound to one stream and is valid for every playlist, segment, part and blocking
request below `/live/STREAM/` until EXPIRY. Every character of a token is URL-safe, so it is
written into URIs as it is. The text is checked for length and shape before anything else,
and the signature is compared in constant time; an expired token is reported as such only
when its signature is right, so a forger learns nothing from the difference.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from collections.abc import Collection
from dataclasses import dataclass

TOKEN_PARAM = "token"
"""The query parameter that carries a token."""
MIN_SECRET_BYTES = 16
"""Shortest secret accepted: 128 bits, below which an HMAC key can be guessed offline."""
MAX_VIEWER = 64
"""Characters of a viewer id: room for a UUID or a shop's customer number, never a memory sink."""
MAX_EXPIRY_DIGITS = 12
"""Digits of EXPIRY: seconds since the epoch stay below 10^12 for the next 30,000 years."""
SIGNATURE_CHARS = 43
"""Length of a SHA-256 HMAC in base64url without padding."""
MAX_TOKEN = MAX_EXPIRY_DIGITS + 1 + MAX_VIEWER + 1 + SIGNATURE_CHARS
"""Longest well-formed token; anything longer is refused before it is split."""
ALL_STREAMS = "*"
"""In a list of protected streams: every stream."""
_VIEWER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_SIGNATURE_CHARS = _VIEWER_CHARS
_CONTEXT = b"mediacore-playback-v1"
"""Prefixed to what is signed, so a playback signature is never valid for another use of the secret."""


class Verdict(enum.Enum):
    """What a request's token allows."""

    VALID = "valid"
    FORBIDDEN = "forbidden"  # missing, malformed, for another stream or badly signed: 403
    EXPIRED = "expired"  # well signed for this stream, but past its expiry: 410

    @property
    def status(self) -> int:
        return {Verdict.VALID: 200, Verdict.FORBIDDEN: 403, Verdict.EXPIRED: 410}[self]


class TokenError(ValueError):
    """A token cannot be issued with these arguments (bad viewer id, expiry or secret)."""


def is_viewer_id(viewer: str) -> bool:
    return len(viewer) <= MAX_VIEWER and all(c in _VIEWER_CHARS for c in viewer)


def _signature(secret: bytes, stream: str, expiry: str, viewer: str) -> str:
    message = b"\0".join((_CONTEXT, stream.encode(), expiry.encode(), viewer.encode()))
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(secret: bytes, stream: str, expires: int, viewer: str = "") -> str:
    """A token for `stream`, valid until `expires` (seconds since the epoch)."""
    if len(secret) < MIN_SECRET_BYTES:
        raise TokenError(f"a playback secret needs at least {MIN_SECRET_BYTES} bytes")
    if not 0 <= expires < 10**MAX_EXPIRY_DIGITS:
        raise TokenError("expiry out of range")
    if not is_viewer_id(viewer):
        raise TokenError(f"a viewer id is at most {MAX_VIEWER} letters, digits, '-' or '_'")
    expiry = str(int(expires))
    return f"{expiry}.{viewer}.{_signature(secret, stream, expiry, viewer)}"


def verify(secret: bytes, token: str | None, stream: str, now: float) -> Verdict:
    """Whether `token` lets its holder play `stream` at `now` (seconds since the epoch)."""
    if not token or len(token) > MAX_TOKEN or not secret:
        return Verdict.FORBIDDEN
    pieces = token.split(".")
    if len(pieces) != 3:
        return Verdict.FORBIDDEN
    expiry, viewer, signature = pieces
    if (
        not 0 < len(expiry) <= MAX_EXPIRY_DIGITS
        or not expiry.isascii()
        or not expiry.isdigit()
        or not is_viewer_id(viewer)
        or len(signature) != SIGNATURE_CHARS
        or not all(c in _SIGNATURE_CHARS for c in signature)
    ):
        return Verdict.FORBIDDEN
    if not hmac.compare_digest(signature, _signature(secret, stream, expiry, viewer)):
        return Verdict.FORBIDDEN
    return Verdict.VALID if now < int(expiry) else Verdict.EXPIRED


@dataclass(frozen=True, slots=True)
class PlaybackPolicy:
    """Which streams need a token, and the secret tokens are signed with. The default protects
    nothing."""

    secret: bytes = b""
    streams: Collection[str] = ()
    """Stream names that need a token; `*` for every stream."""

    def protects(self, stream: str) -> bool:
        return bool(self.streams) and (ALL_STREAMS in self.streams or stream in self.streams)

    def check(self, stream: str, token: str | None, now: float) -> Verdict:
        """The verdict on a request for `stream` carrying `token` (None when it carries none)."""
        return verify(self.secret, token, stream, now)
