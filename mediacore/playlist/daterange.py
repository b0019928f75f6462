"""EXT-X-DATERANGE (draft-pantos-hls-rfc8216bis S4.4.5.1) as data: one render(), one parse().

Attribute syntax (S4.2, P3): ID, CLASS and START-DATE are quoted strings, DURATION a decimal
float in seconds; a client attribute (`X-` then capitals, digits and '-') is a quoted string
or a decimal float (digits and one '.', no sign, no exponent). A quoted string holds no
double quote, CR or LF (and here no other control character). START-DATE is ISO-8601 with
milliseconds (D1), and a playlist with a DATERANGE carries PROGRAM-DATE-TIME (D2; the stores
give every segment one). A tag longer than MAX_DATERANGE_BYTES is refused both ways.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from mediacore.playlist.tags import format_date_time, parse_date_time

TAG = "#EXT-X-DATERANGE"
MAX_DATERANGE_BYTES = 64 * 1024
"""Longest DATERANGE line written or read: above the largest item the hub admits, and
small enough that a hostile playlist cannot make the parser hold megabytes per line."""

ClientValue = str | int | float

_NAME = re.compile(r"^X-[A-Z0-9][A-Z0-9\-]*$")
_PAIR = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^,"]*)(?:,|$)')
_DECIMAL = re.compile(r"^[0-9]+(\.[0-9]*)?$")
_BAD_STRING = re.compile(r'["\x00-\x1f\x7f]')


class DateRangeError(ValueError):
    """A DATERANGE that breaks the attribute rules or the size bound."""


def render_client_value(value: ClientValue) -> str:
    """A quoted string, or a decimal float without sign or exponent; a float keeps a '.' so
    it reads back as a float, an int has none."""
    if isinstance(value, str):
        if _BAD_STRING.search(value):
            raise DateRangeError("a DATERANGE quoted string holds a double quote or a control character")
        return f'"{value}"'
    if isinstance(value, bool) or value < 0 or value != value or value in (float("inf"),):
        raise DateRangeError(f"a DATERANGE number must be finite and at least 0, not {value!r}")
    if isinstance(value, int):
        return str(value)
    text = format(Decimal(repr(float(value))), "f")
    return text if "." in text else text + ".0"


def _parse_client_value(text: str) -> ClientValue:
    if text.startswith('"'):
        return text[1:-1]
    if not _DECIMAL.match(text):
        raise DateRangeError(f"DATERANGE value {text[:32]!r} is neither a quoted string nor a decimal float")
    return float(text) if "." in text else int(text)


@dataclass(frozen=True, slots=True)
class DateRange:
    """One date range: `start_date` in seconds since the epoch (written to the millisecond),
    `duration` in seconds (written to the millisecond) or None, client attributes in order."""

    id: str
    start_date: float
    cls: str | None = None
    duration: float | None = None
    attributes: tuple[tuple[str, ClientValue], ...] = ()

    def render(self) -> str:
        """The tag line, without a newline."""
        parts = [f"ID={render_client_value(self.id)}"]
        if self.cls is not None:
            parts.append(f"CLASS={render_client_value(self.cls)}")
        parts.append(f'START-DATE="{format_date_time(self.start_date)}"')
        if self.duration is not None:
            if not 0 <= self.duration < float("inf"):
                raise DateRangeError(f"DATERANGE DURATION must be finite and at least 0, not {self.duration!r}")
            parts.append(f"DURATION={self.duration:.3f}")
        seen = {"ID", "CLASS", "START-DATE", "DURATION"}
        for name, value in self.attributes:
            if not _NAME.match(name) or name in seen:  # P3: no name twice
                raise DateRangeError(f"DATERANGE client attribute name {name[:64]!r} is not allowed or repeated")
            seen.add(name)
            parts.append(f"{name}={render_client_value(value)}")
        line = f"{TAG}:" + ",".join(parts)
        if len(line.encode()) > MAX_DATERANGE_BYTES:
            raise DateRangeError(f"DATERANGE of {len(line.encode())} bytes exceeds {MAX_DATERANGE_BYTES}")
        return line

    @classmethod
    def parse(cls, line: str) -> DateRange:
        """Read a tag line (with or without the `#EXT-X-DATERANGE:` prefix); DateRangeError
        on a broken one. Attributes other than ID, CLASS, START-DATE, DURATION and `X-`
        ones (END-DATE, SCTE35-*, ...) are not kept."""
        if len(line.encode()) > MAX_DATERANGE_BYTES:
            raise DateRangeError(f"DATERANGE of {len(line.encode())} bytes exceeds {MAX_DATERANGE_BYTES}")
        text = line.split(":", 1)[1] if line.startswith(TAG + ":") else line
        values: dict[str, str] = {}
        pos = 0
        while pos < len(text):
            match = _PAIR.match(text, pos)
            if match is None:
                raise DateRangeError(f"DATERANGE attribute list is broken at character {pos}")
            name, value = match.group(1), match.group(2)
            if name in values:
                raise DateRangeError(f"DATERANGE attribute {name} appears twice (P3)")
            values[name] = value
            pos = match.end()
        if "ID" not in values or "START-DATE" not in values:
            raise DateRangeError("DATERANGE needs ID and START-DATE")
        ident = _parse_client_value(values["ID"])
        start = _parse_client_value(values["START-DATE"])
        klass = _parse_client_value(values["CLASS"]) if "CLASS" in values else None
        if not isinstance(ident, str) or not isinstance(start, str) or not isinstance(klass, str | None):
            raise DateRangeError("DATERANGE ID, CLASS and START-DATE must be quoted strings")
        try:
            start_date = parse_date_time(start)
        except ValueError as e:
            raise DateRangeError(f"DATERANGE START-DATE {start[:40]!r} is not an ISO-8601 date") from e
        duration = None
        if "DURATION" in values:
            parsed = _parse_client_value(values["DURATION"])
            if isinstance(parsed, str):
                raise DateRangeError("DATERANGE DURATION must be a decimal float")
            duration = float(parsed)
        attributes = tuple((k, _parse_client_value(v)) for k, v in values.items() if k.startswith("X-"))
        return cls(ident, start_date, klass, duration, attributes)
