"""RTMP media messages -> mediacore Frames.

This is the edge where RTMP's 32-bit millisecond clock is unwrapped to 64 bits and moved to
each track's timebase (video 1/90000, audio 1/sample_rate). AAC frame times are rebuilt
sample-exactly from the frame count, because RTMP rounds them to whole milliseconds; the
clock is re-anchored only when the sender's time moves by more than half a frame from it.

A cue point (`onCuePoint` named "product", parameters `product_id` and `duration`) becomes
timed metadata at its message's timestamp, on the same clock and with the same wall-clock
mapping as the frames: frame-accurate. Its other scalar parameters become `X-` attributes
(`title` -> X-TITLE). The hub checks the item's bounds.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from mediacore.model.aac import SAMPLES_PER_FRAME, AacError, parse_asc
from mediacore.model.h264 import H264Error, parse_avcc, parse_sps
from mediacore.model.media import VIDEO_TIMEBASE, Frame, Kind, Track
from mediacore.model.metadata import PRODUCT_CLASS, AttributeValue, MetadataError, TimedMetadata
from mediacore.model.timebase import Unwrapper

from . import flv
from .chunk import AUDIO, VIDEO
from .errors import RtmpError

log = logging.getLogger(__name__)

PRODUCT_CUE = "product"
"""The cue point name that pins a product card."""
_PARAMETER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


@dataclass(slots=True)
class Counters:
    video_frames: int = 0
    audio_frames: int = 0
    bytes: int = 0
    ignored: int = 0


class RtmpToFrames:
    """Turns a publisher's audio/video messages into Frames. `now` (wall-clock seconds) is
    passed in; the first frame anchors the wall clock, later ones derive from timestamps so
    that PROGRAM-DATE-TIME stays consistent with the media timeline."""

    def __init__(self, stream_name: str = "") -> None:
        self.stream_name = stream_name
        self.video: Track | None = None
        self.audio: Track | None = None
        self._clock = Unwrapper(32)
        self._anchor_ms: int | None = None
        self._anchor_wall = 0.0
        self._audio_next: int | None = None  # expected pts of the next AAC frame, samples
        self.counters = Counters()
        self._warned: set[str] = set()

    def _wall(self, ms: int, now: float) -> float:
        if self._anchor_ms is None:
            self._anchor_ms = ms
            self._anchor_wall = now
        return self._anchor_wall + (ms - self._anchor_ms) / 1000.0

    def _warn_once(self, what: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning("rtmp stream %s: %s; ignoring it", self.stream_name, what)

    def push(self, type_id: int, timestamp: int, payload: bytes, now: float) -> tuple[list[Track], list[Frame]]:
        """Returns (tracks that were (re)configured, frames)."""
        self.counters.bytes += len(payload)
        ms = self._clock.unwrap(timestamp)
        if type_id == VIDEO:
            return self._video(ms, payload, now)
        if type_id == AUDIO:
            return self._audio(ms, payload, now)
        return [], []

    def cue_point(self, timestamp: int, name: str, parameters: dict[str, Any], now: float) -> TimedMetadata | None:
        """Timed metadata for a product cue point at `timestamp` (32-bit ms), None for a cue
        point of another name; MetadataError for a product cue point without a product."""
        if name != PRODUCT_CUE:
            return None
        ms = self._clock.unwrap(timestamp)
        product = _scalar(parameters.get("product_id"))
        if product is None or product == "":
            raise MetadataError("product cue point without a product_id")
        attributes: dict[str, AttributeValue] = {"X-PRODUCT-ID": str(product)}
        for key, value in parameters.items():
            scalar = _scalar(value)
            if key in ("product_id", "duration") or scalar is None or not _PARAMETER.match(str(key)):
                continue
            attributes["X-" + str(key).upper().replace("_", "-")] = scalar
        duration = parameters.get("duration")
        seconds = float(duration) if isinstance(duration, int | float) and not isinstance(duration, bool) else None
        return TimedMetadata("", PRODUCT_CLASS, self._wall(ms, now), ms * 90, seconds, tuple(attributes.items()))

    def _video(self, ms: int, payload: bytes, now: float) -> tuple[list[Track], list[Frame]]:
        tag = flv.parse_video(payload)
        if tag.codec != "h264":
            self._warn_once(f"video codec {tag.codec} is not supported (H.264 only)")
            self.counters.ignored += 1
            return [], []
        if tag.packet_type == flv.AVC_SEQUENCE_HEADER:
            try:
                avc = parse_avcc(tag.body)
                sps = parse_sps(avc.sps[0])
            except H264Error as e:
                raise RtmpError(f"bad AVC sequence header: {e}") from e
            if self.video is not None and self.video.config == tag.body:
                return [], []
            self.video = Track(
                Kind.VIDEO,
                "h264",
                VIDEO_TIMEBASE,
                bytes(tag.body),
                codec_string=avc.codec_string,
                width=sps.width,
                height=sps.height,
            )
            return [self.video], []
        if tag.packet_type != flv.AVC_NALU:
            return [], []
        if self.video is None:
            self.counters.ignored += 1
            return [], []
        if not tag.body:
            return [], []
        keyframe = tag.frame_type == flv.FRAME_KEY
        dts = ms * 90
        pts = (ms + tag.composition_time) * 90
        self.counters.video_frames += 1
        frame = Frame(self.video, dts, pts, keyframe, tag.body, self._wall(ms + tag.composition_time, now))
        return [], [frame]

    def _audio(self, ms: int, payload: bytes, now: float) -> tuple[list[Track], list[Frame]]:
        tag = flv.parse_audio(payload)
        if tag.sound_format != flv.SOUND_AAC:
            self._warn_once(f"audio format {tag.sound_format} is not supported (AAC only)")
            self.counters.ignored += 1
            return [], []
        if tag.packet_type == flv.AAC_SEQUENCE_HEADER:
            try:
                asc = parse_asc(tag.body)
            except AacError as e:
                raise RtmpError(f"bad AAC sequence header: {e}") from e
            if self.audio is not None and self.audio.config == tag.body:
                return [], []
            self.audio = Track(
                Kind.AUDIO,
                "aac",
                asc.sample_rate,
                bytes(tag.body),
                codec_string=asc.codec_string,
                sample_rate=asc.sample_rate,
                channels=asc.channels,
            )
            self._audio_next = None
            return [self.audio], []
        if self.audio is None or tag.packet_type != flv.AAC_RAW or not tag.body:
            self.counters.ignored += 1
            return [], []
        rate = self.audio.timebase
        sent = (ms * rate + 500) // 1000
        expected = self._audio_next
        if expected is None or abs(sent - expected) * 2 > SAMPLES_PER_FRAME:
            expected = sent
        self._audio_next = expected + SAMPLES_PER_FRAME
        self.counters.audio_frames += 1
        wall_ms = expected * 1000 // rate
        frame = Frame(self.audio, expected, expected, True, tag.body, self._wall(wall_ms, now))
        return [], [frame]


def _scalar(value: object) -> AttributeValue | None:
    """An AMF value as an attribute value: strings as they are, whole numbers as integers
    (AMF0 numbers are doubles), other numbers as floats; anything else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value) if float(value).is_integer() else float(value)
    return None
