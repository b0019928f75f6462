"""The hub: one Stream per name, fanning frames out to subscribers.

Fan-out never awaits the slowest reader: each subscriber has a bounded PriorityPacketQueue.
When a subscriber falls behind, non-reference video frames go first, then whole GOP tails
(that subscriber then skips video until the next keyframe, so it never receives a GOP with
a hole in it), and audio last; every drop is counted (mediacore/hub/priority_queue.py).

A publisher that leaves and comes back within the grace period continues the same Stream:
the new session's timestamps are rebased to continue after the old ones (so every consumer
sees one monotonic timeline) and subscribers get a Discontinuity event first.

Timed metadata (mediacore/model/metadata.py) enters through Stream.add_metadata (the
plugin API: "now", or a wall-clock start) or a publisher's cue point (a presentation time
on the publisher's clock, rebased like its frames). The hub resolves both clocks of the item
from the newest frame, checks every bound and the per-stream rate, and queues the item to
every subscriber as a control event: ordered with the frames, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from mediacore.hub.config import HubConfig
from mediacore.hub.priority_queue import AUDIO, KEY, NONREF, REF
from mediacore.hub.publisher import PublishAttempt, StopPublishing, StreamBusy, TooManyStreams
from mediacore.hub.queues import PriorityPacketQueue
from mediacore.model.h264 import H264Error, is_reference, parse_avcc
from mediacore.model.media import Frame, Kind, Track
from mediacore.model.metadata import (
    MAX_START_OFFSET,
    PRODUCT_CLASS,
    RECENT_IDS,
    AttributeValue,
    MetadataError,
    TimedMetadata,
    attribute_tuple,
    check,
    value_bytes,
)
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


Item = Frame | Discontinuity | Unpublished | StreamEnded | TimedMetadata


class Subscription:
    """One consumer's bounded queue. get() waits; the hub never does."""

    def __init__(self, stream: Stream, max_items: int, max_bytes: int, name: str) -> None:
        self.stream = stream
        self.name = name
        self.queue = PriorityPacketQueue(max_items, max_bytes)
        self._next_drop_log = 1
        self._waiter: asyncio.Future[None] | None = None
        # The loop of the first get(), kept: asyncio.get_running_loop() costs a getpid()
        # system call, and a packager waits once or twice per read of its publisher.
        self._loop: asyncio.AbstractEventLoop | None = None
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

    def offer_event(self, event: Discontinuity | Unpublished | StreamEnded | TimedMetadata) -> None:
        size = sum(len(k) + value_bytes(v) for k, v in event.attributes) if isinstance(event, TimedMetadata) else 0
        self.queue.push_force(event, size)
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
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
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
        # Timed metadata: the newest frame (90 kHz PTS on the output timeline, wall clock),
        # the admission times of the last second's items, and the recent IDs.
        self._newest: tuple[int, float] | None = None
        self._metadata_times: deque[float] = deque()
        self._recent_ids: deque[str] = deque()
        self._recent_id_set: set[str] = set()
        self._metadata_count = 0
        self.keyframe: Frame | None = None
        """The newest video keyframe (shared, never copied): what a thumbnail shows."""
        self.keyframes = 0
        """Video keyframes received so far: tells a thumbnail whether `keyframe` is a new one."""

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
        self._newest = (end, frame.wallclock)
        if frame.keyframe and kind is Kind.VIDEO:
            self.keyframe = frame
            self.keyframes += 1
        priority = self._priority(frame)
        for sub in self.subscribers:
            sub.offer(frame, priority)

    # Timed metadata ------------------------------------------------------------------

    def add_metadata(
        self,
        attributes: Mapping[str, AttributeValue],
        start: float | Literal["now"] = "now",
        duration: float | None = None,
        metadata_id: str | None = None,
        cls: str = PRODUCT_CLASS,
    ) -> TimedMetadata:
        """Pin timed metadata to this stream (the plugin API's entry point). `start` is "now"
        (the PROGRAM-DATE-TIME of the newest frame received) or a wall-clock time in seconds
        since the epoch, within MAX_START_OFFSET of it; `duration` in seconds or None;
        `attributes` are `X-` names to strings or non-negative numbers; `metadata_id`
        defaults to "card-N". Returns the item as the packagers write it (its `id` and
        `start_date` are the DATERANGE's ID and START-DATE); MetadataError when refused,
        and then nothing was added."""
        newest = self._require_media()
        if start == "now":
            pts, date = newest
        elif isinstance(start, int | float) and not isinstance(start, bool):
            self._check_offset(float(start) - newest[1])
            date = float(start)
            pts = newest[0] + round((date - newest[1]) * 90000)
        else:
            raise MetadataError(f'timed metadata start must be "now" or seconds since the epoch, not {start!r}')
        item = TimedMetadata(
            metadata_id if metadata_id is not None else self._next_id(),
            cls,
            date,
            pts,
            duration,
            attribute_tuple(attributes),
        )
        return self._admit(item)

    def publish_metadata(self, item: TimedMetadata) -> TimedMetadata:
        """A publisher's timed metadata: `item.pts` (90 kHz) on the publisher's clock and its
        `start_date` as ingest maps that clock to the wall clock, as for its frames. Rebased
        like the frames of this publish; an empty `id` gets "card-N". MetadataError when
        refused."""
        newest = self._require_media()
        if item.pts is None or item.start_date is None:
            raise MetadataError("a publisher's timed metadata needs a presentation time and a start date")
        pts = self._rebase_90k(item.pts)
        self._check_offset((pts - newest[0]) / 90000)
        item = item.resolved(pts, item.start_date)
        return self._admit(item if item.id else replace(item, id=self._next_id()))

    def _require_media(self) -> tuple[int, float]:
        if self.ended:
            raise MetadataError(f"stream {self.name!r} has ended")
        if self._newest is None:
            raise MetadataError(f"stream {self.name!r} has no media yet")
        return self._newest

    @staticmethod
    def _check_offset(seconds: float) -> None:
        if not abs(seconds) <= MAX_START_OFFSET:
            raise MetadataError(
                f"timed metadata starts {seconds:+.1f} s from the newest frame"
                f" (at most {MAX_START_OFFSET:g} s either way)"
            )

    def _next_id(self) -> str:
        while True:
            self._metadata_count += 1
            ident = f"card-{self._metadata_count}"
            if ident not in self._recent_id_set:
                return ident

    def _admit(self, item: TimedMetadata) -> TimedMetadata:
        check(item)
        if item.id in self._recent_id_set:
            raise MetadataError(f"timed metadata ID {item.id!r} is already used in stream {self.name!r}")
        now = self.hub.clock()
        times = self._metadata_times
        while times and times[0] <= now - 1.0:
            times.popleft()
        limit = self.hub.config.metadata_per_second
        if len(times) >= limit:
            raise MetadataError(f"stream {self.name!r} takes at most {limit} timed metadata items per second")
        times.append(now)
        self._recent_ids.append(item.id)
        self._recent_id_set.add(item.id)
        if len(self._recent_ids) > RECENT_IDS:
            self._recent_id_set.discard(self._recent_ids.popleft())
        for sub in list(self.subscribers):
            sub.offer_event(item)
        return item

    def _rebase_90k(self, pts: int) -> int:
        """A publisher's 90 kHz time on the stream's timeline: the offset its frames get."""
        if self.epoch == 0:
            return pts
        video = self._offsets.get(Kind.VIDEO)
        if video is not None:
            return pts + video  # video's timebase is 90 kHz
        audio = self.tracks.get(Kind.AUDIO)
        if Kind.AUDIO in self._offsets and audio is not None:
            return pts + rescale(self._offsets[Kind.AUDIO], audio.timebase, 90000)
        if self._epoch_origin is None:
            self._epoch_origin = (pts, self._end_90k + 3000)
        src0, out0 = self._epoch_origin
        return pts + out0 - src0

    def _priority(self, frame: Frame) -> int:
        track = frame.track
        if track.kind is not Kind.VIDEO:
            return AUDIO
        if frame.keyframe:
            return KEY
        if track.codec != "h264":
            return REF  # HEVC, AV1: not parsed for disposability; never shed before reference frames
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

    def add_metadata(self, item: TimedMetadata) -> TimedMetadata:
        if self.closed:
            raise MetadataError("the publishing session is closed")
        return self.stream.publish_metadata(item)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.hub._unpublished(self.stream)


class Hub:
    """Registry of live streams. Listeners hear about streams appearing (packagers attach)."""

    def __init__(
        self,
        config: HubConfig | None = None,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or HubConfig()
        self.wall_clock = wall_clock  # seconds since the epoch, for publish times
        self.clock = clock  # monotonic seconds, for rates
        self.streams: dict[str, Stream] = {}
        self.on_stream_started: list[Callable[[Stream], None]] = []
        self.on_stream_unpublished: list[Callable[[Stream], None]] = []
        self.on_publish: list[Callable[[Stream], None]] = []
        """Called at every publish (a first one, a resume, a republish), after on_stream_started."""

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
        for cb in self.on_publish:
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
