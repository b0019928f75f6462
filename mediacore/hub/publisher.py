"""What ingest sees of the hub: a place to publish named streams, and the session it gets.

Ingest imports only this module of the hub (and the media model), so a protocol server can
be driven in tests by anything with these two shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mediacore.model.media import Frame, Track
from mediacore.model.metadata import TimedMetadata


class StreamBusy(Exception):
    """A second publisher asked for a stream name that is already being published."""


class TooManyStreams(StreamBusy):
    """The hub holds as many streams as it may: a new name is refused."""


class Publisher(Protocol):
    """One publishing session: tracks, frames and metadata go in; close() ends it."""

    def update_track(self, track: Track) -> None: ...

    def send(self, frame: Frame) -> None: ...

    def set_metadata(self, metadata: dict[str, object]) -> None: ...

    def add_metadata(self, item: TimedMetadata) -> TimedMetadata:
        """Timed metadata from the publisher (an encoder's cue point): `item.pts` in 90 kHz
        on the clock of its frames, `item.start_date` the wall-clock time its frames map
        that to. Returns it as published; MetadataError (mediacore.model.metadata) when
        refused, which ends nothing: the session goes on."""
        ...

    def close(self) -> None: ...


StopPublishing = Callable[[str], None]
"""How the server ends a publishing session from outside it (an operator's kick, a revoked
key): ingest passes one to publish() and closes its session, with the reason, when called."""


class PublishPoint(Protocol):
    """Where publishers come from: publish(name, stop) or StreamBusy; is_publishing(name)."""

    def publish(self, name: str, stop: StopPublishing | None = None) -> Publisher: ...

    def is_publishing(self, name: str) -> bool: ...
