"""Timed metadata: a value pinned to a moment of a stream (a product card, an encoder's cue
point), written by the packagers as EXT-X-DATERANGE in every playlist and in-band as ID3
(MPEG-TS) and emsg (fMP4).

A `TimedMetadata` names its moment twice, once per clock the packagers need: `start_date`,
the wall-clock time that PROGRAM-DATE-TIME uses (seconds since the epoch), and `pts`, the
presentation time on the stream's 90 kHz timeline. The hub fills in whichever the caller did
not give (mediacore/hub/hub.py), so both agree with the frames' PDT mapping.

Every bound on it is named here, once; `check()` refuses a value that breaks one with a
`MetadataError` whose message says which.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

AttributeValue = str | int | float
"""A client attribute's value: a quoted string, or a non-negative decimal number."""

MAX_ATTRIBUTE_BYTES = 16 * 1024
"""Bytes of one item's client attributes as written in the playlist (names, values, quotes,
commas): a product card's title, price, image URL and a few kilobytes of extra data pass
(the issue asks for 8 KB), while one item cannot bloat every playlist of the window."""
MAX_ID_LENGTH = 128
"""Characters of an item's ID or CLASS: a UUID, a product SKU or a reverse-DNS class name fits."""
MAX_START_OFFSET = 60.0
"""Seconds an item's start may lie before or after the newest frame: further back its
segment has left every window; further ahead is a clock error, not a plan."""
MAX_DURATION = 24 * 3600.0
"""Seconds an item may last: a day covers any show."""
RECENT_IDS = 4096
"""IDs remembered per stream to refuse a repeated one: more than the items any playlist
window can list at the items-per-second bound."""

PRODUCT_CLASS = "com.mediacore.product"
"""The CLASS of product cards (the commerce plugin's and encoders' cue points)."""

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")
_ATTRIBUTE_NAME = re.compile(r"^X-[A-Z0-9][A-Z0-9\-]*$")
_FORBIDDEN_IN_STRING = re.compile(r'["\x00-\x1f\x7f]')


class MetadataError(ValueError):
    """Timed metadata refused: the message says which rule it broke. Nothing was added."""


@dataclass(frozen=True, slots=True)
class TimedMetadata:
    """One item. `attributes` are the client attributes (`X-` names), in the order written;
    `duration` is in seconds (None: open-ended). `start_date` and `pts` are None only
    before the hub has resolved them."""

    id: str
    cls: str
    start_date: float | None = None
    pts: int | None = None
    duration: float | None = None
    attributes: tuple[tuple[str, AttributeValue], ...] = ()

    def resolved(self, pts: int, start_date: float) -> TimedMetadata:
        return TimedMetadata(self.id, self.cls, start_date, pts, self.duration, self.attributes)

    @property
    def pts_90k(self) -> int:
        """The presentation time; only for a resolved item (the packagers receive no other)."""
        if self.pts is None:
            raise MetadataError(f"timed metadata {self.id!r} has no presentation time yet")
        return self.pts

    @property
    def date(self) -> float:
        """The start as wall-clock seconds; only for a resolved item."""
        if self.start_date is None:
            raise MetadataError(f"timed metadata {self.id!r} has no start date yet")
        return self.start_date


def attribute_tuple(attributes: Mapping[str, AttributeValue]) -> tuple[tuple[str, AttributeValue], ...]:
    return tuple(attributes.items())


def value_bytes(value: AttributeValue) -> int:
    """Bytes a value takes in the playlist: a string with its quotes, a number as digits."""
    if isinstance(value, str):
        return len(value.encode()) + 2
    return len(repr(value))


def check(item: TimedMetadata) -> None:
    """Raise MetadataError unless `item` keeps every rule and bound of this module."""
    for what, text in (("ID", item.id), ("CLASS", item.cls)):
        if not isinstance(text, str) or not text or len(text) > MAX_ID_LENGTH:
            raise MetadataError(f"timed metadata {what} must have 1 to {MAX_ID_LENGTH} characters")
        if not _ID.match(text):
            raise MetadataError(
                f"timed metadata {what} {text[:MAX_ID_LENGTH]!r} may hold only letters, digits and '.', '_', ':', '-'"
            )
    if item.duration is not None and not (
        isinstance(item.duration, int | float)
        and not isinstance(item.duration, bool)
        and math.isfinite(item.duration)
        and 0 <= item.duration <= MAX_DURATION
    ):
        raise MetadataError(f"timed metadata duration must be between 0 and {MAX_DURATION:g} seconds")
    size = 0
    names: set[str] = set()
    for name, value in item.attributes:
        if not isinstance(name, str) or not _ATTRIBUTE_NAME.match(name):
            raise MetadataError(
                f"timed metadata attribute name {str(name)[:64]!r} must be 'X-' then capital letters, digits and '-'"
            )
        if name in names:
            raise MetadataError(f"timed metadata attribute {name} appears twice")
        names.add(name)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise MetadataError(f"timed metadata attribute {name} must be a string or a number")
        if isinstance(value, str):
            if _FORBIDDEN_IN_STRING.search(value):
                raise MetadataError(f"timed metadata attribute {name} holds a double quote or a control character")
        elif not math.isfinite(value) or value < 0:
            raise MetadataError(f"timed metadata attribute {name} must be a finite number of at least 0")
        size += len(name) + 2 + value_bytes(value)  # NAME=VALUE and a comma
        if size > MAX_ATTRIBUTE_BYTES:
            raise MetadataError(f"timed metadata attributes exceed {MAX_ATTRIBUTE_BYTES} bytes")
