"""Stream thumbnails: `/live/STREAM/thumbnail.jpg`, a small JPEG of the stream's newest
video keyframe, for the live directory and for moderators reviewing streams.

- `ThumbnailPolicy` (sans-I/O, `now` passed in) decides, per stream and per request, whether
  the cached picture is served, a new one is decoded, or there is nothing yet. A picture is
  current for `[http] thumbnail_interval` seconds; after that the next request decodes the
  newest keyframe (if a new one arrived) and every request meanwhile waits for that one
  decode. Nothing runs on a timer: a stream whose thumbnail nobody asks for costs nothing
  but the hub keeping a reference to its newest keyframe (`Stream.keyframe`).
- `render_thumbnail()` decodes one keyframe (its avcC and AVCC NAL units, as the hub holds
  them) with PyAV's H.264 decoder, scales it to `[http] thumbnail_width` and encodes it with
  PyAV's MJPEG encoder. It runs on the engine's thumbnail thread, never on the event loop.
- `Thumbnails` is the thin shell: one policy, cached JPEG and render task per stream.

The route (pages.py) sits below /live/STREAM/, so the playback-token middleware covers it,
and it does not count as a viewer (the directory shows every stream's thumbnail to everyone).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from fractions import Fraction

import av

from mediacore.hub.hub import Stream
from mediacore.model.media import Frame

log = logging.getLogger(__name__)

JPEG_TYPE = "image/jpeg"


class ThumbnailError(Exception):
    """A keyframe that does not decode to a picture (not H.264, a broken configuration)."""


class Action(enum.Enum):
    NOT_YET = "not_yet"
    """No keyframe has arrived and nothing is cached: 404, no-store."""
    SERVE = "serve"
    """The cached picture is current."""
    RENDER = "render"
    """Decode the newest keyframe now (the caller reports rendered() or failed())."""
    WAIT = "wait"
    """A decode is under way: wait for it."""


class ThumbnailPolicy:
    """When one stream's thumbnail is decoded again. Sans-I/O: `now` is monotonic seconds,
    `keyframes` the hub's count of video keyframes received (Stream.keyframes)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.key: int | None = None
        """Keyframe count of the cached picture; None: nothing cached."""
        self.checked_at = -math.inf
        """When the cached picture was last decoded or found current."""
        self.rendering: int | None = None
        """Keyframe count being decoded now."""
        self.failed_key: int | None = None
        """A keyframe that failed to decode: not tried again."""
        self.renders = 0

    def request(self, now: float, keyframes: int) -> Action:
        if self.rendering is not None:
            return Action.WAIT
        cached = self.key is not None
        if cached and now - self.checked_at < self.interval:
            return Action.SERVE
        if keyframes == 0 or keyframes == self.failed_key:
            return Action.SERVE if cached else Action.NOT_YET
        if keyframes == self.key:  # no new keyframe since: the picture is still the newest
            self.checked_at = now
            return Action.SERVE
        self.rendering = keyframes
        return Action.RENDER

    def rendered(self, now: float) -> None:
        self.key, self.rendering = self.rendering, None
        self.checked_at = now
        self.renders += 1

    def failed(self) -> None:
        self.failed_key, self.rendering = self.rendering, None

    def max_age(self, now: float) -> int:
        """Seconds a client or cache may keep the picture served now: until it is due again."""
        return max(1, math.ceil(self.interval - (now - self.checked_at)))


def render_thumbnail(frame: Frame, width: int) -> bytes:
    """A JPEG `width` pixels wide (at most the picture's; height keeps the aspect ratio, even)
    of one H.264 keyframe. Blocking (a few ms for 720p): call it on a worker thread."""
    if frame.track.codec != "h264":
        raise ThumbnailError(f"no thumbnail of {frame.track.codec!r} video")
    try:
        decoder = av.CodecContext.create("h264", "r")
        decoder.extradata = frame.track.config
        decoder.thread_count = 1
        pictures = decoder.decode(av.Packet(frame.data)) + decoder.decode(None)
    except (av.FFmpegError, ValueError) as e:
        raise ThumbnailError(f"the keyframe does not decode: {e}") from e
    if not pictures:
        raise ThumbnailError("the keyframe decoded to no picture")
    picture = pictures[0]
    if not isinstance(picture, av.VideoFrame) or picture.width < 2 or picture.height < 2:
        raise ThumbnailError("the keyframe decoded to no picture")
    out_width = max(2, min(width, picture.width) // 2 * 2)
    out_height = max(2, round(picture.height * out_width / picture.width / 2) * 2)
    small = picture.reformat(width=out_width, height=out_height, format="yuvj420p", interpolation="AREA")
    small.pts = 0
    encoder = av.CodecContext.create("mjpeg", "w")
    assert isinstance(encoder, av.VideoCodecContext)
    encoder.width, encoder.height, encoder.pix_fmt = out_width, out_height, "yuvj420p"
    encoder.time_base = Fraction(1, 1)
    packets = encoder.encode(small)  # the encoder's default rate: about 8 KB for 320x180 + encoder.encode(None)
    return b"".join(bytes(p) for p in packets)


@dataclass(slots=True)
class _Entry:
    stream: Stream
    policy: ThumbnailPolicy
    jpeg: bytes | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Thumbnails:
    """Each stream's cached thumbnail; decodes on `executor` (one thread: thumbnails never
    compete with each other for more than one core; PyAV releases the GIL while it decodes)."""

    def __init__(
        self,
        streams: Mapping[str, Stream],
        interval: float,
        width: int,
        executor: Executor,
        clock: Callable[[], float],
        render: Callable[[Frame, int], bytes] = render_thumbnail,
    ) -> None:
        self.streams = streams
        self.interval = interval
        self.width = width
        self.executor = executor
        self.clock = clock
        self.render = render
        self._entries: dict[str, _Entry] = {}

    @property
    def renders(self) -> int:
        """Decodes done so far, over every stream still known (tests count them)."""
        return sum(e.policy.renders for e in self._entries.values())

    def renders_of(self, name: str) -> int:
        entry = self._entries.get(name)
        return entry.policy.renders if entry else 0

    async def get(self, name: str) -> tuple[bytes, int] | None:
        """(JPEG, max-age seconds) of stream `name`, or None when it has no picture (yet)."""
        stream = self.streams.get(name)
        if stream is None:
            self.forget(name)
            return None
        entry = self._entries.get(name)
        if entry is None or entry.stream is not stream:  # a stream forgotten and published afresh
            self.forget(name)
            entry = self._entries[name] = _Entry(stream, ThumbnailPolicy(self.interval))
        action = entry.policy.request(self.clock(), stream.keyframes)
        if action is Action.NOT_YET:
            return None
        if action is Action.RENDER:
            keyframe = stream.keyframe
            assert keyframe is not None  # keyframes > 0
            entry.task = asyncio.get_running_loop().create_task(self._render(entry, keyframe), name=f"thumb-{name}")
        if entry.task is not None and not entry.task.done():
            # Shielded: a viewer who gives up does not cancel the decode the others wait for.
            await asyncio.shield(entry.task)
        if entry.jpeg is None:
            return None
        return entry.jpeg, entry.policy.max_age(self.clock())

    async def _render(self, entry: _Entry, keyframe: Frame) -> None:
        loop = asyncio.get_running_loop()
        try:
            jpeg = await loop.run_in_executor(self.executor, self.render, keyframe, self.width)
        except ThumbnailError as e:
            log.warning("stream %s: no thumbnail: %s", entry.stream.name, e)
            entry.policy.failed()
        except Exception as e:  # a bug or the executor shut down: this keyframe is not tried again
            log.error("stream %s: thumbnail failed: %r", entry.stream.name, e, exc_info=e)
            entry.policy.failed()
        except asyncio.CancelledError:
            entry.policy.failed()
            raise
        else:
            entry.jpeg = jpeg
            entry.policy.rendered(self.clock())

    def close(self) -> None:
        """The engine stops: drop every picture and decode."""
        for name in list(self._entries):
            self.forget(name)

    def forget(self, name: str) -> None:
        """The stream is gone: drop its picture (and any decode under way)."""
        entry = self._entries.pop(name, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()
