"""The hub: one Stream per name, fanning frames out to subscribers.

Fan-out never awaits the slowest reader: each subscriber has a bounded PriorityPacketQueue.
When a subscriber falls behind, non-reference video frames go first, then whole GOP tails
(that subscriber then skips video until the next keyframe, so it never receives a GOP with
a hole in it), and audio last; every drop is counted (mediacore/hub/priority_queue.py).

A publisher that leaves and comes back within the grace period continues the same Stream:
the new session's timestamps are rebased to continue after the old ones (so every consumer
sees one monotonic timeline) and subscribers get a Discontinuity event first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mediacore.hub.config import HubConfig
from mediacore.hub.priority_queue import AUDIO, KEY, NONREF, REF
from mediacore.hub.publisher import PublishAttempt, StopPublishing, StreamBusy, TooManyStreams
from mediacore.hub.queues import PriorityPacketQueue
from mediacore.model.h264 import H264Error, is_reference, parse_avcc
from mediacore.model.media import Frame, Kind, Track
from mediacore.model.timebase import rescale

log = logging.getLogger(__name__)

BITRATE_WINDOW = 10.0
"""Seconds of ingest the reported bitrate averages over: long enough to span a few GOPs."""
BITRATE_MIN_SPAN = 0.5
"""Seconds of samples needed before a bitrate is reported at all (0 until then)."""
BITRATE_SAMPLES = 64
"""(time, bytes) samples kept per stream; the API is read every few seconds at most."""


# Control events that travel in subscriber queues next to frames.
@dataclass(frozen=True, slots=True)
class Discontinuity:
    """The publisher came back (or changed codec parameters): a new timeline segment."""

    epoch: int


@dataclass(frozen=True, slots=True)
class Unpublished:
    """The publisher left; more frames may follow if it returns within the grace period."""

    epoch: int


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The stream is over: no publisher came back. Subscribers should finish."""


Item = Frame | Discontinuity | Unpublished | StreamEnded


class Subscription:
    """One consumer's bounded queue. get() waits; the hub never does."""

    def __init__(self, stream: Stream, max_items: int, max_bytes: int, name: str) -> None:
        self.stream = stream
        self.name = name
        self.queue = PriorityPacketQueue(max_items, max_bytes)
        self._next_drop_log = 1
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    @property
    def dropped(self) -> int:
        return int(self.queue.dropped)

    def offer(self, frame: Frame, priority: int) -> None:
        self.queue.push(frame, len(frame.data), priority)
        if self.queue.dropped >= self._next_drop_log:
            self._log_drop()
        self._wake()

    def _log_drop(self) -> None:
        dropped = self.queue.dropped
        self._next_drop_log = dropped * 2  # log at about 1, 2, 4, 8 ... drops
        by = self.queue.dropped_by_priority
        log.warning(
            "subscriber %s of %s is too slow: %d frames dropped (audio %d, keyframes %d, reference %d, "
            "non-reference %d)",
            self.name,
            self.stream.name,
            dropped,
            by[AUDIO],
            by[KEY],
            by[REF],
            by[NONREF],
        )

    def offer_event(self, event: Discontinuity | Unpublished | StreamEnded) -> None:
        self.queue.push_force(event, 0)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> Item | None:
        return self.queue.pop()

    async def get(self) -> Item:
        while True:
            item = self.queue.pop()
            if item is not None:
                return item
            if self.closed:
                return StreamEnded()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        self.closed = True
        self.stream.unsubscribe(self)
        self._wake()


@dataclass(slots=True)
class StreamStats:
    frames: dict[Kind, int] = field(default_factory=lambda: {Kind.VIDEO: 0, Kind.AUDIO: 0})
    bytes: int = 0
    publishes: int = 0
    # (monotonic time, cumulative bytes) samples for the bitrate over the last seconds
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=BITRATE_SAMPLES))


class Stream:
    """A named live stream. Owned by the Hub; tracks, metadata, subscribers, epochs."""

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub = hub
        self.name = name
        self.tracks: dict[Kind, Track] = {}
        self.metadata: dict[str, object] = {}
        self.subscribers: list[Subscription] = []
        self.publishing = False
        self.ended = False
        self.epoch = -1
        self.published_at = 0.0
        self.stop_publisher: StopPublishing | None = None
        """Ends the current publishing session (set by ingest at publish, cleared when it leaves)."""
        self.attempt: PublishAttempt | None = None
        """The credentials the latest publishing session was admitted with (None: published
        by the server itself, a raw RTP input); kept after it leaves, for the resume check."""
        self.stats = StreamStats()
        # Timeline continuity across publishes: the latest presentation time seen so far
        # (90 kHz) and, per epoch, the offset added to each track's timestamps. The new
        # session's first DTS lands one frame after the old session's last PTS, so neither
        # decode nor presentation times of the two sessions overlap.
        self._end_90k = 0
        self._epoch_origin: tuple[int, int] | None = None  # (source time 90k, output time 90k)
        self._offsets: dict[Kind, int] = {}
        self._video_track: Track | None = None
        self._nal_length_size = 4

    def subscribe(self, name: str, max_items: int | None = None, max_bytes: int | None = None) -> Subscription:
        cfg = self.hub.config
        sub = Subscription(
            self,
            max_items or cfg.subscriber_queue_frames,
            max_bytes or cfg.subscriber_queue_bytes,
            name,
        )
        self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)

    def _begin_publish(self) -> None:
        self.publishing = True
        self.ended = False
        self.epoch += 1
        self.published_at = self.hub.wall_clock()
        self.stats.publishes += 1
        self._epoch_origin = None
        self._offsets = {}
        if self.epoch > 0:
            for sub in list(self.subscribers):
                sub.offer_event(Discontinuity(self.epoch))

    def _end_publish(self) -> None:
        self.publishing = False
        self.stop_publisher = None
        for sub in list(self.subscribers):
            sub.offer_event(Unpublished(self.epoch))

    def end(self) -> None:
        """No publisher came back: tell subscribers the stream is over."""
        self.ended = True
        for sub in list(self.subscribers):
            sub.offer_event(StreamEnded())

    def _rebase(self, frame: Frame) -> Frame:
        if self.epoch == 0:
            return frame
        kind = frame.track.kind
        offset = self._offsets.get(kind)
        if offset is None:
            tb = frame.track.timebase
            src_90k = rescale(frame.dts, tb, 90000)
            if self._epoch_origin is None:
                # Continue one nominal frame after the previous epoch's end.
                self._epoch_origin = (src_90k, self._end_90k + 3000)
            src0, out0 = self._epoch_origin
            offset = rescale(out0 - src0, 90000, tb)
            self._offsets[kind] = offset
        if offset == 0:
            return frame
        return Frame(frame.track, frame.dts + offset, frame.pts + offset, frame.keyframe, frame.data, frame.wallclock)

    def deliver(self, frame: Frame) -> None:
        frame = self._rebase(frame)
        kind = frame.track.kind
        stats = self.stats
        stats.frames[kind] += 1
        stats.bytes += len(frame.data)
        tb = frame.track.timebase
        end = frame.pts if tb == 90000 else rescale(frame.pts, tb, 90000)
        if end > self._end_90k:
            self._end_90k = end
        priority = self._priority(frame)
        for sub in self.subscribers:
            sub.offer(frame, priority)

    def _priority(self, frame: Frame) -> int:
        track = frame.track
        if track.kind is not Kind.VIDEO:
            return AUDIO
        if frame.keyframe:
            return KEY
        if track is not self._video_track:
            self._video_track = track
            try:
                self._nal_length_size = parse_avcc(track.config).nal_length_size
            except H264Error:
                self._nal_length_size = 4
        return REF if is_reference(frame.data, self._nal_length_size) else NONREF

    def bitrate(self, now: float) -> float:
        """Bits per second over the last BITRATE_WINDOW seconds of ingest (`now`: monotonic seconds)."""
        samples = self.stats.samples
        samples.append((now, self.stats.bytes))
        while len(samples) > 2 and now - samples[0][0] > BITRATE_WINDOW:
            samples.popleft()
        t0, b0 = samples[0]
        if now - t0 < BITRATE_MIN_SPAN:
            return 0.0
        return (self.stats.bytes - b0) * 8 / (now - t0)


class StreamPublisher:
    """The Publisher handed to ingest for one publishing session."""

    def __init__(self, hub: Hub, stream: Stream) -> None:
        self.hub = hub
        self.stream = stream
        self.closed = False

    def update_track(self, track: Track) -> None:
        self.stream.tracks[track.kind] = track

    def send(self, frame: Frame) -> None:
        if not self.closed:
            self.stream.deliver(frame)

    def set_metadata(self, metadata: dict[str, object]) -> None:
        self.stream.metadata = metadata

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.hub._unpublished(self.stream)


class Hub:
    """Registry of live streams. Listeners hear about streams appearing (packagers attach)."""

    def __init__(self, config: HubConfig | None = None, wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config or HubConfig()
        self.wall_clock = wall_clock  # seconds since the epoch, for publish times
        self.streams: dict[str, Stream] = {}
        self.on_stream_started: list[Callable[[Stream], None]] = []
        self.on_stream_unpublished: list[Callable[[Stream], None]] = []

    def get(self, name: str) -> Stream | None:
        return self.streams.get(name)

    def is_publishing(self, name: str) -> bool:
        stream = self.streams.get(name)
        return stream is not None and stream.publishing

    def publish(
        self, name: str, stop: StopPublishing | None = None, attempt: PublishAttempt | None = None
    ) -> StreamPublisher:
        stream = self.streams.get(name)
        if stream is not None and stream.publishing:
            raise StreamBusy(f"stream {name!r} is already being published")
        fresh = stream is None or stream.ended
        if stream is None and len(self.streams) >= self.config.max_streams:
            raise TooManyStreams(
                f"stream {name!r} refused: the server holds {len(self.streams)} streams "
                f"(limit {self.config.max_streams})"
            )
        if stream is None:
            stream = Stream(self, name)
            self.streams[name] = stream
        stream._begin_publish()
        stream.stop_publisher = stop
        stream.attempt = attempt
        if fresh:
            for cb in self.on_stream_started:
                cb(stream)
        log.info("stream %s: publish started (epoch %d)", name, stream.epoch)
        return StreamPublisher(self, stream)

    def kick(self, name: str, reason: str) -> bool:
        """End the publishing session of `name` (it may publish again, if it is still
        allowed to); False if nobody is publishing it or its ingest cannot be stopped."""
        stream = self.streams.get(name)
        if stream is None or not stream.publishing or stream.stop_publisher is None:
            return False
        log.warning("stream %s: publisher stopped: %s", name, reason)
        stream.stop_publisher(reason)
        return True

    def _unpublished(self, stream: Stream) -> None:
        stream._end_publish()
        log.info("stream %s: publisher left", stream.name)
        for cb in self.on_stream_unpublished:
            cb(stream)

    def remove(self, name: str) -> None:
        stream = self.streams.pop(name, None)
        if stream is not None:
            for sub in list(stream.subscribers):
                sub.close()
