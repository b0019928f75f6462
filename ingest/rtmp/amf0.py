"""AMF0 encoding and decoding (Adobe AMF0 specification), bounded.

Every declared length and count is checked against the bytes that remain and against the
configured limits before anything is allocated, and nesting depth is capped, so a hostile
command cannot make the decoder allocate or recurse beyond what its message already cost.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from .config import RtmpConfig
from .errors import RtmpError

_DEFAULTS = RtmpConfig()  # every bound is named once, in ingest/rtmp/config.py

NUMBER, BOOLEAN, STRING, OBJECT, MOVIECLIP, NULL, UNDEFINED, REFERENCE = range(8)
ECMA_ARRAY, OBJECT_END, STRICT_ARRAY, DATE, LONG_STRING, UNSUPPORTED = range(8, 14)
XML_DOCUMENT, TYPED_OBJECT, AVMPLUS = 15, 16, 17

_DOUBLE = struct.Struct(">d")


class Undefined:
    """The AMF0 undefined marker (distinct from null, which is None)."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "undefined"


UNDEFINED_VALUE = Undefined()


class EcmaArray(dict[str, Any]):
    """An associative array (type 0x08); onMetaData arrives as one."""


@dataclass(frozen=True, slots=True)
class AmfLimits:
    max_depth: int = _DEFAULTS.max_amf_depth
    max_string: int = _DEFAULTS.max_amf_string
    max_items: int = _DEFAULTS.max_amf_items


class _Decoder:
    __slots__ = ("data", "pos", "limits")

    def __init__(self, data: bytes, limits: AmfLimits) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits

    def _take(self, n: int, what: str) -> bytes:
        remaining = len(self.data) - self.pos
        if n > remaining:
            raise RtmpError(f"AMF0 {what} declares {n} bytes but only {remaining} remain")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def _u16(self) -> int:
        return int.from_bytes(self._take(2, "u16"), "big")

    def _u32(self) -> int:
        return int.from_bytes(self._take(4, "u32"), "big")

    def _utf8(self, length: int, what: str) -> str:
        if length > self.limits.max_string:
            raise RtmpError(f"AMF0 {what} of {length} bytes exceeds the limit of {self.limits.max_string}")
        return self._take(length, what).decode("utf-8", errors="replace")

    def _key(self) -> str:
        return self._utf8(self._u16(), "property name")

    def _count(self, what: str) -> int:
        count = self._u32()
        remaining = len(self.data) - self.pos
        if count > self.limits.max_items:
            raise RtmpError(f"AMF0 {what} declares {count} items, more than the limit of {self.limits.max_items}")
        if count > remaining:
            raise RtmpError(f"AMF0 {what} declares {count} items but only {remaining} bytes remain")
        return count

    def _properties(self, depth: int, into: dict[str, Any]) -> dict[str, Any]:
        while True:
            if self.data[self.pos : self.pos + 3] == b"\x00\x00\x09":
                self.pos += 3
                return into
            if self.pos >= len(self.data):
                # Tolerated: some encoders end an ECMA array without the end marker.
                return into
            if len(into) >= self.limits.max_items:
                raise RtmpError(f"AMF0 object has more than {self.limits.max_items} properties")
            key = self._key()
            into[key] = self.value(depth + 1)

    def value(self, depth: int = 0) -> Any:
        if depth > self.limits.max_depth:
            raise RtmpError(f"AMF0 nesting deeper than {self.limits.max_depth}")
        marker = self._take(1, "type marker")[0]
        if marker == NUMBER:
            return _DOUBLE.unpack(self._take(8, "number"))[0]
        if marker == BOOLEAN:
            return self._take(1, "boolean")[0] != 0
        if marker == STRING:
            return self._utf8(self._u16(), "string")
        if marker == OBJECT:
            return self._properties(depth, {})
        if marker == NULL:
            return None
        if marker == UNDEFINED or marker == UNSUPPORTED:
            return UNDEFINED_VALUE
        if marker == ECMA_ARRAY:
            self._u32()  # the count is only a hint; the end marker terminates
            return self._properties(depth, EcmaArray())
        if marker == STRICT_ARRAY:
            count = self._count("strict array")
            return [self.value(depth + 1) for _ in range(count)]
        if marker == DATE:
            millis = _DOUBLE.unpack(self._take(8, "date"))[0]
            self._take(2, "date time zone")
            return millis
        if marker == LONG_STRING or marker == XML_DOCUMENT:
            return self._utf8(self._u32(), "long string")
        if marker == TYPED_OBJECT:
            self._key()
            return self._properties(depth, {})
        if marker == REFERENCE:
            self._u16()
            return UNDEFINED_VALUE
        raise RtmpError(f"AMF0 type marker 0x{marker:02x} is not supported")


def decode(data: bytes, limits: AmfLimits = AmfLimits()) -> list[Any]:
    """Decode every value in a command or data message body."""
    decoder = _Decoder(bytes(data), limits)
    values: list[Any] = []
    while decoder.pos < len(data):
        if len(values) >= limits.max_items:
            raise RtmpError(f"AMF0 message has more than {limits.max_items} values")
        values.append(decoder.value())
    return values


def _encode_key(key: str) -> bytes:
    raw = key.encode()
    return struct.pack(">H", len(raw)) + raw


def encode_value(value: Any) -> bytes:
    if value is None:
        return bytes((NULL,))
    if value is UNDEFINED_VALUE:
        return bytes((UNDEFINED,))
    if isinstance(value, bool):
        return bytes((BOOLEAN, int(value)))
    if isinstance(value, (int, float)):
        return bytes((NUMBER,)) + _DOUBLE.pack(float(value))
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) > 0xFFFF:
            return bytes((LONG_STRING,)) + struct.pack(">I", len(raw)) + raw
        return bytes((STRING,)) + struct.pack(">H", len(raw)) + raw
    if isinstance(value, EcmaArray):
        body = b"".join(_encode_key(k) + encode_value(v) for k, v in value.items())
        return bytes((ECMA_ARRAY,)) + struct.pack(">I", len(value)) + body + b"\x00\x00\x09"
    if isinstance(value, dict):
        body = b"".join(_encode_key(k) + encode_value(v) for k, v in value.items())
        return bytes((OBJECT,)) + body + b"\x00\x00\x09"
    if isinstance(value, (list, tuple)):
        return bytes((STRICT_ARRAY,)) + struct.pack(">I", len(value)) + b"".join(encode_value(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def encode(*values: Any) -> bytes:
    return b"".join(encode_value(v) for v in values)
