"""The stream-name rule, for every protocol and URL: one place decides what a name may be.

Names appear in publish URLs, playback URLs, file names, metric labels and log lines, so
they are short and made of characters that need no escaping anywhere.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

MAX_STREAM_NAME = 128
"""Longest stream name in characters: long enough for any shop's naming, short enough for
a URL path segment and a metric label."""

PUBLISH_APP = "live"
"""The one application publishers connect to: rtmp://HOST/live/STREAM, rtsp://HOST/live/STREAM."""

MAX_PUBLISH_QUERY = 1024
"""Characters a publish name may carry after '?' (the key and other parameters)."""

SHOWN_NAME = 64
"""Characters of a refused name quoted in an error: enough to recognise, not a log flood."""

_ALLOWED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def stream_name_problem(name: str) -> str | None:
    """Why `name` is not a valid stream name, or None when it is."""
    if len(name) > MAX_STREAM_NAME:
        return f"stream name of {len(name)} characters exceeds the limit of {MAX_STREAM_NAME}"
    if not _ALLOWED.match(name) or ".." in name:
        shown = name if len(name) <= SHOWN_NAME else name[:SHOWN_NAME] + "..."
        return f"stream name {shown!r} is not allowed (letters, digits, '_', '-', '.')"
    return None


def is_stream_name(name: str) -> bool:
    return stream_name_problem(name) is None


def split_publish_name(raw: str) -> tuple[str, dict[str, str]]:
    """'shop1?key=K' -> ('shop1', {'key': 'K'}): the name and its query parameters."""
    name, _, query = raw.partition("?")
    params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    return name, params


_QUERY = re.compile(r"\?[^\s'\"]*")


def without_query(text: str) -> str:
    """`text` with every URL query cut out ('rtsp://h/live/a?key=K/x' -> 'rtsp://h/live/a?...'):
    a publish key travels in the query, and no log line or error message may repeat it."""
    return _QUERY.sub("?...", text)
