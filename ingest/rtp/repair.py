"""Loss repair for H.264 video: decode with FFmpeg's error concealment, re-encode with x264.

Chromium's H.264 decoder fails for good on a frame whose reference was lost or on a
truncated slice, so under loss a pass-through stream freezes until a keyframe arrives
whole (docs/rtp-ingest.md, "Why freezes, not artifacts"). FFmpeg's decoder conceals the
same damage and outputs a picture for every frame it is given. `H264Repair` runs every
access unit the depacketizer could put together (a damaged one with the NAL units that
arrived whole) through that decoder and re-encodes the pictures with libx264 (no B-frames,
zero latency), so what reaches the players is a clean stream with artifacts where the
source had holes, never a reference a decoder cannot find.

It is the synchronous core: `push()` takes one source frame (presentation and decode time
in the 90 kHz video timebase) and returns the re-encoded frames it completes, in order;
`ThreadedTranscoder` (ingest/rtp/transcode.py) runs it on a worker thread.

Timing: decoded pictures come out in presentation order with the source's presentation
times, and each is encoded at that time, so the re-encoded stream stays on the source's
timeline (its decode time equals its presentation time: there are no B-frames). A frame
lost whole (no slice of it arrived) is a hole in those times: the previous picture is
encoded again in its place, so the output has one frame per source frame. Keyframes
come every REPAIR_GOP of the source's timeline: where a source with that GOP has its IDRs,
also when one of them was lost whole.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import av
from av.video.frame import PictureType, VideoFrame

from mediacore.model.h264 import NAL_AUD, NAL_PPS, NAL_SPS, parse_sps, split_annexb
from mediacore.model.media import VIDEO_TIMEBASE

from .transcode import TranscodeError

log = logging.getLogger(__name__)

_TIME_BASE = Fraction(1, VIDEO_TIMEBASE)

REPAIR_PRESET = "ultrafast"
"""x264 preset of the re-encode: the cheapest. 720p30 costs about 3.3 ms of CPU a frame
(decode included) on the test machine, 10 % of a core; "superfast" costs 45 % more for a
sharper picture at the same bitrate, which matters less than keeping up on a loaded host."""
REPAIR_GOP = 2 * VIDEO_TIMEBASE
"""Interval (90 kHz ticks, 2 s) between two keyframes of the repaired stream: an IDR is
forced on the first picture this long after the last one (less half a frame). For a source
with the usual live GOP of 2 s (the HLS segment duration) that is the picture of the
source's IDR, also when that IDR was lost whole. A source IDR off this grid is not made an
IDR: after a hole (frames dropped while the repair caught up) moved the grid, an IDR at the
source's next one would start a GOP shorter than the segment target, and the HLS segmenter,
which cuts at the first keyframe at or past the target, would then make a segment of both
GOPs, longer than TARGETDURATION (seen end to end: EXTINF 3.47 s with a 2 s target). A
hole therefore shifts the grid; a source with a longer GOP gets 2 s GOPs."""
REPAIR_MAX_BACKLOG = 10
"""Source frames waiting for the repair's worker thread at most (1/3 s at 30 fps; it
takes 3-8 ms a frame). Each one waiting is latency the re-encoded video adds behind the
audio, on top of the skew the jitter buffers and the decode-time window already put
between them, and the HLS segmenter takes video 1 s behind the audio for a hole in it
(VIDEO_STALL_90K), which drops video to the next keyframe: with 0.5 s allowed, a loaded
test machine saw it happen. Frames dropped instead cost less: holes up to REPAIR_MAX_FILL
are filled. A repair further behind is not keeping up with real time (a host out of CPU),
and source frames are dropped rather than the latency growing without bound
(ingest/rtp/receiver.py)."""
REPAIR_MAX_FILL = REPAIR_GOP
"""Longest hole (90 kHz ticks, 2 s) filled by repeating the previous picture: frames lost
whole, or dropped while the repair caught up. A hole left in the video shorter than the
packagers' hole detection (1 s of video behind the audio) would become one LL-HLS part as
long as the hole (seen end to end: a 1.07 s part with a 0.22 s PART-TARGET); a longer one
is a pause of the sender, left as a hole for the packagers."""


@dataclass(frozen=True, slots=True)
class RepairedFrame:
    """One re-encoded frame: length-prefixed (AVCC) NAL units at `pts` (90 kHz; DTS is the same)."""

    pts: int
    keyframe: bool
    data: bytes


def annexb_to_avcc(data: bytes) -> bytes:
    """An encoder's Annex B access unit as length-prefixed NAL units, without AUDs and
    parameter sets (those of the track's codec config are the only ones)."""
    nalus = [n for n in split_annexb(data) if n[0] & 0x1F not in (NAL_AUD, NAL_SPS, NAL_PPS)]
    return b"".join(len(n).to_bytes(4, "big") + n for n in nalus)


class H264Repair:
    """Damaged H.264 access units in, clean re-encoded ones out (synchronous, one thread)."""

    def __init__(self, avcc: bytes, sps: bytes, bitrate: int) -> None:
        """`avcc`: the source track's avcC record (its SPS/PPS); `sps` sizes the encoder;
        `bitrate`: bits per second of the re-encode (about the source's)."""
        info = parse_sps(sps)
        self.width, self.height = info.width, info.height
        self.decoder = av.CodecContext.create("h264", "r")
        self.decoder.extradata = avcc
        self.decoder.thread_count = 1  # frame threads would add a frame of latency each
        # Output every picture, concealed or not, also before the first IDR decoded.
        self.decoder.flags |= av.codec.context.Flags.output_corrupt
        self.decoder.options = {"flags2": "+showall", "ec": "favor_inter+guess_mvs+deblock"}
        self.encoder = av.CodecContext.create("libx264", "w")
        self.encoder.width = self.width
        self.encoder.height = self.height
        self.encoder.pix_fmt = "yuv420p"
        self.encoder.time_base = _TIME_BASE
        self.encoder.framerate = Fraction(30)
        self.encoder.bit_rate = bitrate
        self.encoder.max_b_frames = 0
        self.encoder.gop_size = 1 << 20  # keyframes are forced, where the source has them
        self.encoder.flags |= av.codec.context.Flags.global_header  # SPS/PPS in extradata only
        self.encoder.options = {
            "preset": REPAIR_PRESET,
            "tune": "zerolatency",
            "forced-idr": "1",
            "x264-params": "scenecut=0",
        }
        self.encoder.open()
        parameter_sets = split_annexb(bytes(self.encoder.extradata or b""))
        self.sps = next(n for n in parameter_sets if n[0] & 0x1F == NAL_SPS)
        self.pps = next(n for n in parameter_sets if n[0] & 0x1F == NAL_PPS)
        self._last: VideoFrame | None = None  # the last picture encoded, repeated over holes
        self._last_pts: int | None = None
        self._step: float | None = None  # the source's frame interval, averaged over single steps
        self._idr_pts: int | None = None  # pts of the last IDR encoded
        self.frames_in = 0
        self.frames_out = 0
        self.repeated = 0  # pictures encoded again in place of frames lost whole
        self.decode_errors = 0

    def push(self, pts: int, dts: int, data: bytes) -> list[RepairedFrame]:
        """One source access unit (AVCC, possibly missing NAL units) -> re-encoded frames."""
        self.frames_in += 1
        packet = av.Packet(data)
        packet.pts, packet.dts, packet.time_base = pts, dts, _TIME_BASE
        try:
            pictures = self.decoder.decode(packet)
        except av.error.FFmpegError as e:
            self.decode_errors += 1
            raise TranscodeError(f"H.264 access unit rejected by the decoder: {e}") from e
        out: list[RepairedFrame] = []
        for picture in pictures:
            out += self._picture(picture)
        return out

    def _picture(self, picture: VideoFrame) -> list[RepairedFrame]:
        pts = picture.pts
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            return []  # no time or not after the last one (a duplicate): the encoder needs increasing times
        out: list[RepairedFrame] = []
        if self._last_pts is not None:
            gap = pts - self._last_pts
            # Averaged: times in milliseconds (FLV, RTMP) put 30 fps frames 2970 or 3060 ticks apart.
            if self._step is None or gap < 0.75 * self._step:
                self._step = float(gap)
            elif gap < 1.5 * self._step:
                self._step += (gap - self._step) / 8
            missing = round(gap / self._step) - 1
            if self._last is not None and gap <= REPAIR_MAX_FILL and missing > 0:
                for k in range(1, missing + 1):
                    self.repeated += 1
                    out += self._encode(self._last, self._last_pts + k * gap // (missing + 1))
        if picture.format.name != "yuv420p" or (picture.width, picture.height) != (self.width, self.height):
            picture = picture.reformat(self.width, self.height, "yuv420p")
        out += self._encode(picture, pts)
        self._last, self._last_pts = picture, pts
        return out

    def _encode(self, picture: VideoFrame, pts: int) -> list[RepairedFrame]:
        # Half a frame of tolerance: the 90 kHz times of a source stamped in milliseconds
        # (FLV, RTMP) are not all one step apart, so its 2 s GOP may be a tick or two short.
        idr = self._idr_pts is None or pts - self._idr_pts >= REPAIR_GOP - int(self._step or 0) // 2
        picture.pts, picture.time_base = pts, _TIME_BASE
        picture.pict_type = PictureType.I if idr else PictureType.NONE
        out = []
        for packet in self.encoder.encode(picture):
            out.append(self._packet(packet))
        return out

    def _packet(self, packet: av.Packet) -> RepairedFrame:
        assert packet.pts is not None
        self.frames_out += 1
        if packet.is_keyframe:
            self._idr_pts = packet.pts
        return RepairedFrame(packet.pts, packet.is_keyframe, annexb_to_avcc(bytes(packet)))

    def flush(self) -> list[RepairedFrame]:
        """The publisher left: decode and encode what the codecs hold."""
        out: list[RepairedFrame] = []
        try:
            for picture in self.decoder.decode(None):
                out += self._picture(picture)
        except av.error.FFmpegError as e:
            log.warning("H.264 repair: the decoder failed while flushing: %s", e)
        out += [self._packet(p) for p in self.encoder.encode(None) if p.pts is not None]
        return out
