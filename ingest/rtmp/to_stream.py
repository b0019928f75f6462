"""RTMP media messages -> mediacore Frames.

Video is H.264 (legacy FLV, or FourCC `avc1`), HEVC (`hvc1`) or AV1 (`av01`) over Enhanced
RTMP (ingest/rtmp/flv.py); a frame's keyframe flag comes from its bitstream (an HEVC IRAP
picture, an AV1 key frame) where that parses, else from the FLV frame type. Another FourCC
refuses the session (RtmpError); another legacy codec id is logged once and ignored.

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
from mediacore.model.av1 import Av1Error, parse_av1c, strip_temporal_delimiters
from mediacore.model.av1 import is_keyframe as is_av1_keyframe
from mediacore.model.h264 import H264Error, parse_avcc, parse_sps
from mediacore.model.hevc import NAL_SPS as HEVC_NAL_SPS
from mediacore.model.hevc import HevcError, contains_irap, parse_hvcc
from mediacore.model.hevc import parse_sps as parse_hevc_sps
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
        self._hevc_length_size = 4
        self._av1_reduced = False

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
        if tag.codec not in _VIDEO_CODECS:
            if tag.fourcc:
                # An Enhanced RTMP publisher chose this codec from our fourCcList or sent it
                # unasked: refusing the session tells the streamer at once.
                raise RtmpError(f"Enhanced RTMP video codec {tag.fourcc!r} is not supported (send hvc1, av01 or avc1)")
            self._warn_once(f"video codec {tag.codec} is not supported (H.264, or HEVC/AV1 over Enhanced RTMP)")
            self.counters.ignored += 1
            return [], []
        if tag.packet_type == flv.SEQUENCE_START:
            if self.video is not None and self.video.config == tag.body and self.video.codec == tag.codec:
                return [], []
            self.video = _video_track(tag.codec, bytes(tag.body))
            self._hevc_length_size = 4
            if tag.codec == "hevc":
                self._hevc_length_size = parse_hvcc(self.video.config).nal_length_size
            elif tag.codec == "av1":
                self._av1_reduced = parse_av1c(self.video.config).reduced_still_picture_header
            return [self.video], []
        if tag.packet_type != flv.CODED_FRAMES:
            return [], []
        if self.video is None or self.video.codec != tag.codec:
            self.counters.ignored += 1
            return [], []
        if not tag.body:
            return [], []
        data = tag.body
        keyframe = tag.frame_type == flv.FRAME_KEY
        if tag.codec == "hevc":
            irap = contains_irap(data, self._hevc_length_size)
            keyframe = keyframe if irap is None else irap
        elif tag.codec == "av1":
            try:
                data = strip_temporal_delimiters(data)
            except Av1Error as e:
                raise RtmpError(f"bad AV1 temporal unit: {e}") from e
            if not data:
                return [], []
            key = is_av1_keyframe(data, self._av1_reduced)
            keyframe = keyframe if key is None else key
        dts = ms * 90
        pts = (ms + tag.composition_time) * 90
        self.counters.video_frames += 1
        frame = Frame(self.video, dts, pts, keyframe, data, self._wall(ms + tag.composition_time, now))
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


_VIDEO_CODECS = ("h264", "hevc", "av1")


def _video_track(codec: str, record: bytes) -> Track:
    """The video Track of a sequence start's configuration record; RtmpError if it does not parse."""
    try:
        if codec == "hevc":
            hvcc = parse_hvcc(record)
            sps = parse_hevc_sps(hvcc.units(HEVC_NAL_SPS)[0])
            return Track(Kind.VIDEO, codec, VIDEO_TIMEBASE, record, hvcc.codec_string, sps.width, sps.height)
        if codec == "av1":
            av1c = parse_av1c(record)
            return Track(Kind.VIDEO, codec, VIDEO_TIMEBASE, record, av1c.codec_string, av1c.width, av1c.height)
        avc = parse_avcc(record)
        info = parse_sps(avc.sps[0])
        return Track(Kind.VIDEO, codec, VIDEO_TIMEBASE, record, avc.codec_string, info.width, info.height)
    except (H264Error, HevcError, Av1Error) as e:
        name = {"hevc": "HEVC", "av1": "AV1"}.get(codec, "AVC")
        raise RtmpError(f"bad {name} sequence header: {e}") from e


def _scalar(value: object) -> AttributeValue | None:
    """An AMF value as an attribute value: strings as they are, whole numbers as integers
    (AMF0 numbers are doubles), other numbers as floats; anything else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value) if float(value).is_integer() else float(value)
    return None
