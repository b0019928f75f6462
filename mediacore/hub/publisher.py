"""What ingest sees of the hub: a place to publish named streams, and the session it gets.

Ingest imports only this module of the hub (and the media model), so a protocol server can
be driven in tests by anything with these two shapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class PublishAttempt:
    """Who asks to publish what: the stream name, the key it gave ("" for none), the protocol
    ("rtmp", "rtsp") and the peer's IP address (no port: a reconnect comes from a new port)."""

    stream: str
    key: str = field(repr=False)  # never in a repr, so never in a log line or a traceback
    protocol: str
    remote: str


Authorizer = Callable[[PublishAttempt], Awaitable[str | None]]
"""Decides a publish attempt: None allows it, a string is the refusal's reason (it goes to the
peer and the log, so it never holds the key). Ingest awaits it before answering the publish
request; a raised exception counts as a refusal."""


HELD_WHILE_DECIDING = 64 * 1024
"""Bytes a connection holds while its publish decision is pending before it stops reading.
An encoder waits for the answer and sends next to nothing meanwhile, so reading goes on (a
peer that leaves is noticed at once); one that streams ahead is paused, not buffered for."""


StopPublishing = Callable[[str], None]
"""How the server ends a publishing session from outside it (an operator's kick, a revoked
key): ingest passes one to publish() and closes its session, with the reason, when called."""


class PublishPoint(Protocol):
    """Where publishers come from: publish(name, stop, attempt) or StreamBusy; is_publishing(name).
    `attempt` is the admitted PublishAttempt the session publishes with: the server keeps it
    to re-check the publisher and to know who may resume the stream."""

    def publish(
        self, name: str, stop: StopPublishing | None = None, attempt: PublishAttempt | None = None
    ) -> Publisher: ...

    def is_publishing(self, name: str) -> bool: ...
