"""The lexical side of playlists: attribute lists and dates, written and read one way.

An attribute list is `NAME=VALUE` pairs separated by commas, where a quoted string may hold
commas (RFC 8216 4.2). Dates are ISO-8601 with milliseconds and a zone (D1).
"""

from __future__ import annotations

import datetime as dt
import re

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def parse_attributes(text: str) -> dict[str, str]:
    """'URI="a.m4s",DURATION=0.2' -> {'URI': 'a.m4s', 'DURATION': '0.2'} (quotes removed)."""
    return {k: v.strip('"') for k, v in _ATTRIBUTE.findall(text)}


def format_date_time(epoch_seconds: float) -> str:
    t = dt.datetime.fromtimestamp(epoch_seconds, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_date_time(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def yes(flag: bool) -> str:
    return "YES" if flag else "NO"
