"""One announced RTP media, sans-I/O: RTP -> jitter buffer -> depacketizer -> frames ->
the hub's Publisher, and the receiver's RTCP policy (receiver reports, generic NACK, PLI).

The shells (the RTSP server, raw RTP inputs) move datagrams in and RTCP out and pass the
time: `now` (monotonic seconds) for buffering and RTCP timing, `wall` (seconds since the
epoch) to stamp frames.
"""

from __future__ import annotations

import logging

from ingest.rtp.compiled import JitterBuffer
from ingest.rtp.jitter_buffer import MAX_DELAY
from mediacore.hub.publisher import Publisher
from mediacore.model.counting import worth_logging
from mediacore.model.h264 import H264Error
from mediacore.model.media import VIDEO_TIMEBASE, Frame, Kind, Track

from .config import NACK_INTERVAL, PLI_INTERVAL, REPORT_INTERVAL, RTX_MAX_NACKS, RTX_PLAYOUT_DELAY, SOURCE_SILENCE
from .depacketize import AacDepacketizer, H264Depacketizer, LatmDepacketizer, OpusDepacketizer
from .errors import RtpError
from .packet import Nack, Pli, ReceiverReport, ReportBlock, RtpPacket, SenderReport, parse_rtcp, parse_rtp
from .repair import REPAIR_MAX_BACKLOG, H264Repair, RepairedFrame
from .sdp import MediaDescription, check_latm
from .to_stream import RtpToFrames, SessionClock, aac_track, audio_track, video_track
from .transcode import SAMPLE_RATE, OpusToAac, ThreadedTranscoder

log = logging.getLogger("mediacore.rtsp")  # the name operators filter RTP ingest lines by

FLUSH_HORIZON = 3600.0
"""Seconds past `now` at which a finished session's buffer is drained: later than any
playout deadline, so everything buffered is released."""


Address = tuple[str, int]


class SourceLock:
    """The one UDP address a track's datagrams may come from, sans-I/O.

    An RTP lock takes the first address it hears, from `host` only if one is given (RTSP:
    the client's host; raw RTP inputs: any). Another address replaces it only once it has
    been silent for `silence` seconds: a sender that restarts gets back in, a stranger
    beside a live sender does not.

    An RTCP lock follows an RTP lock (`leader`): it takes the first address it hears from
    the RTP source's host and keeps it for as long as the RTP source stays the same (RTCP
    comes every few seconds only, so silence cannot tell a sender from a stranger there).
    An address heard just before the RTP source was locked is kept (ffmpeg sends its first
    report before its first packet).
    """

    def __init__(
        self, host: str | None = None, silence: float = SOURCE_SILENCE, leader: SourceLock | None = None
    ) -> None:
        self.host = host
        self.silence = silence
        self.leader = leader
        self.address: Address | None = None
        self._seen = 0.0  # when the locked address last sent
        self._since = 0.0  # when it was locked
        self._epoch: Address | None = None  # RTCP: the RTP source this address belongs to

    def admit(self, source: Address, now: float) -> bool:
        """Whether a datagram from `source` arriving at `now` is the sender's."""
        if self.leader is not None:
            return self._follow(self.leader, source, now)
        if source == self.address:
            self._seen = now
            return True
        if self.host is not None and source[0] != self.host:
            return False
        if self.address is not None and now - self._seen < self.silence:
            return False
        self.address = source
        self._seen = self._since = now
        return True

    def _follow(self, leader: SourceLock, source: Address, now: float) -> bool:
        self._sync(leader)
        host = leader.address[0] if leader.address is not None else leader.host
        if host is not None and source[0] != host:
            return False
        if self.address is not None and source != self.address:
            return False
        self.address = source
        self._seen = now
        return True

    def _sync(self, leader: SourceLock) -> None:
        """A new RTP source forgets the RTCP address of the previous one."""
        if leader.address is None or self._epoch == leader.address:
            return
        fresh = (
            self.address is not None
            and self.address[0] == leader.address[0]
            and self._seen >= leader._since - leader.silence
        )
        if not fresh:
            self.address = None
        self._epoch = leader.address

    @property
    def current(self) -> Address | None:
        """The locked address while it is the sender's (RTCP replies go only here)."""
        if self.leader is not None:
            self._sync(self.leader)
            if self.leader.address is None:
                return None
        return self.address

    def describe(self) -> str:
        if self.address is not None:
            return f"{self.address[0]}:{self.address[1]}"
        lead = self.leader
        host = self.host if lead is None else lead.address[0] if lead.address is not None else lead.host
        return f"{host}, port not yet known" if host else "not yet known"


class TrackReceiver:
    """One announced media: RTP -> jitter buffer -> depacketizer -> frames -> hub."""

    def __init__(
        self,
        media: MediaDescription,
        publisher: Publisher,
        peer: str,
        clock: SessionClock,
        receiver_ssrc: int = 0,
        rtp_source: SourceLock | None = None,
        rtcp_source: SourceLock | None = None,
        repair_bitrate: int | None = None,
    ) -> None:
        """`rtp_source` / `rtcp_source`: where this track's UDP datagrams may come from
        (None: anywhere, as over the RTSP TCP connection, whose peer is the publisher).
        `repair_bitrate`: H.264 video is repaired (decoded with error concealment and
        re-encoded at this many bits per second, ingest/rtp/repair.py) instead of frozen
        until a keyframe after a loss; None leaves it as sent."""
        self.media = media
        self.rtp_source = rtp_source
        self.rtcp_source = rtcp_source
        self.foreign = 0  # datagrams from another address or SSRC than the track's source, dropped
        self.publisher = publisher
        self.peer = peer
        if media.rtx_payload_type is None:
            self.jitter = JitterBuffer(media.clock_rate)
        else:  # the sender retransmits: wait long enough for a NACK's answer, and ask again
            floor = min(RTX_PLAYOUT_DELAY, media.rtx_time) if media.rtx_time else RTX_PLAYOUT_DELAY
            self.jitter = JitterBuffer(
                media.clock_rate,
                min_delay=floor,
                max_delay=max(floor, MAX_DELAY),
                max_nacks=RTX_MAX_NACKS,
                nack_interval=NACK_INTERVAL,
            )
        self.rtx_ssrc = 0  # the SSRC of the sender's retransmissions (RFC 4588 session multiplexing)
        self.rtx_received = 0  # retransmissions received (restored, or dropped as duplicate or late)
        self.rtx_recovered = 0  # retransmissions that filled a gap in time
        self.nacked = 0  # sequence numbers asked for in generic NACKs, repeats included
        # Repaired video needs no decode times (the decoder orders by picture order count and
        # the re-encode has no B-frames): no frames are held back for them, 0.1 s less lag.
        repaired = repair_bitrate is not None and media.encoding == "H264"
        self.frames = RtpToFrames(media.clock_rate, clock, reorder=0 if repaired else 3)
        self.track: Track | None = None
        self.bad_packets = 0
        self.depacketizer: H264Depacketizer | AacDepacketizer | LatmDepacketizer | OpusDepacketizer
        self.transcoder: ThreadedTranscoder[tuple[int, bytes]] | None = None
        self.repair_bitrate = repair_bitrate
        self.repairer: ThreadedTranscoder[RepairedFrame] | None = None
        self._repair_wait = False  # the repair fell behind: source frames are dropped until a keyframe
        self.repair_skipped = 0  # source frames dropped while the repair waited for a keyframe
        self._frames_track: Track | None = None  # the track RtpToFrames stamps (Opus, repaired video: not published)
        self._wall_anchor: tuple[int, float] | None = None  # (pts, wall-clock time) of the first transcoded frame
        if media.encoding == "H264":
            self.depacketizer = H264Depacketizer(media.sprop_parameter_sets, repair=repair_bitrate is not None)
            try:  # parameter sets in the SDP: the video track is known before the first frame, as audio's is
                self._track()
            except RtpError:
                pass  # unusable: in-band parameter sets may still come
        elif media.encoding == "OPUS":
            self.depacketizer = OpusDepacketizer()
            core = OpusToAac()
            self.track = aac_track(core.config)
            self._frames_track = Track(
                Kind.AUDIO, "opus", SAMPLE_RATE, b"", "opus", sample_rate=SAMPLE_RATE, channels=2
            )
            self.transcoder = ThreadedTranscoder(core, self._on_aac)
            publisher.update_track(self.track)
        elif media.encoding == "MP4A-LATM":
            mux = check_latm(media)
            self.depacketizer = LatmDepacketizer(mux)
            self.track = aac_track(mux.asc)
            publisher.update_track(self.track)
        else:
            self.depacketizer = AacDepacketizer(
                int(media.fmtp.get("sizelength", "13")),
                int(media.fmtp.get("indexlength", "3")),
                int(media.fmtp.get("indexdeltalength", "3")),
            )
            self.track = audio_track(media)
            publisher.update_track(self.track)
        self.ssrc = 0  # the sender's SSRC: the first seen, another only after SOURCE_SILENCE without it
        self._ssrc_seen: float | None = None  # when the locked SSRC last sent (None: none locked yet)
        self._last_seq = -1  # sequence number of the last packet released by the jitter buffer
        self.receiver_ssrc = receiver_ssrc
        self.bad_rtcp = 0
        self.sender_reports = 0
        self._last_sr: tuple[int, float] | None = None  # (middle 32 bits of its NTP time, arrival)
        self._next_report = 0.0
        self._next_pli = 0.0
        self.plis = 0
        self._orphans_logged = 0  # FU-A fragments without a start, as of the last tick
        self._reported = (0, 0)  # (expected, received) at the previous receiver report

    def on_rtcp(self, data: bytes, now: float, source: Address | None = None) -> bool:
        """One RTCP datagram; False if it came from another address than the track's source."""
        if source is not None and self.rtcp_source is not None and not self.rtcp_source.admit(source, now):
            self._foreign(f"RTCP from {source[0]}:{source[1]}, the source is {self.rtcp_source.describe()}")
            return False
        try:
            packets = parse_rtcp(data)
        except RtpError as e:
            self.bad_rtcp += 1
            self._report_bad("a bad RTCP packet", self.bad_rtcp, e)
            return True
        for packet in packets:
            if isinstance(packet, SenderReport) and (self.ssrc in (0, packet.ssrc)):
                self.sender_reports += 1
                self._last_sr = (int(packet.ntp_seconds * 65536) & 0xFFFFFFFF, now)
                self.frames.sender_report(packet.rtp_timestamp, packet.unix_time)
        return True

    def _foreign(self, why: str) -> None:
        self.foreign += 1
        if worth_logging(self.foreign - 1, self.foreign):
            log.warning(
                "rtp %s: dropped a datagram from a foreign source (%d so far): %s", self.peer, self.foreign, why
            )

    def tick(self, now: float, wall: float) -> list[bytes]:
        """Periodic work: release packets whose deadline passed; RTCP to send back (generic
        NACK for losses past their dwell, PLI while video waits for a keyframe after a loss,
        at most every PLI_INTERVAL; a receiver report every REPORT_INTERVAL)."""
        self.drain(now, wall)
        out = []
        lost = self.jitter.nacks(now)
        if lost and self.ssrc:
            self.nacked += len(lost)
            out.append(Nack(self.receiver_ssrc, self.ssrc, lost).serialize())
        if isinstance(self.depacketizer, H264Depacketizer):
            orphans = self.depacketizer.dropped_fragments  # counted here, off the per-packet path
            if worth_logging(self._orphans_logged, orphans):
                log.warning("rtp %s: FU-A fragment whose start was never seen: %d dropped so far", self.peer, orphans)
            self._orphans_logged = orphans
        if (
            isinstance(self.depacketizer, H264Depacketizer)
            and (self.depacketizer.wants_keyframe or self._repair_wait)
            and self.ssrc
            and now >= self._next_pli
        ):
            self._next_pli = now + PLI_INTERVAL
            self.plis += 1
            out.append(Pli(self.receiver_ssrc, self.ssrc).serialize())
        if self.ssrc and now >= self._next_report:
            self._next_report = now + REPORT_INTERVAL
            out.append(self.receiver_report(now).serialize())
        return out

    def _report_bad(self, what: str, count: int, error: object) -> None:
        if worth_logging(count - 1, count):
            log.warning("rtp %s: dropped %s (%d so far): %s", self.peer, what, count, error)

    def receiver_report(self, now: float) -> ReceiverReport:
        """RFC 3550 6.4.2 report block for the one source of this track."""
        jb = self.jitter
        expected = jb.received + jb.lost
        prev_expected, prev_received = self._reported
        interval_expected = expected - prev_expected
        interval_lost = interval_expected - (jb.received - prev_received)
        fraction = (interval_lost << 8) // interval_expected if interval_expected > 0 and interval_lost > 0 else 0
        self._reported = (expected, jb.received)
        lsr, dlsr = 0, 0
        if self._last_sr is not None:
            lsr = self._last_sr[0]
            dlsr = int((now - self._last_sr[1]) * 65536)
        block = ReportBlock(
            self.ssrc,
            min(fraction, 255),
            min(jb.lost, 0x7FFFFF),
            max(jb.highest_sequence, 0) & 0xFFFFFFFF,
            int(jb.jitter),
            lsr,
            dlsr,
        )
        return ReceiverReport(self.receiver_ssrc, [block])

    def counters(self) -> dict[str, int]:
        """What happened to this track's packets and frames (exported as metrics)."""
        jb = self.jitter
        d = self.depacketizer
        return {
            "received": jb.received,
            "lost": jb.lost,
            "late": jb.late,
            "duplicate": jb.duplicates,
            "reordered": jb.reordered,
            "bad": self.bad_packets,
            "bad_rtcp": self.bad_rtcp,
            "foreign": self.foreign,
            "orphan_fragment": getattr(d, "dropped_fragments", 0),
            "damaged_frames": getattr(d, "damaged_units", 0),
            "skipped_frames": getattr(d, "skipped_units", 0) + self.repair_skipped,
            "nacked": self.nacked,
            "rtx_received": self.rtx_received,
            "rtx_recovered": self.rtx_recovered,
        }

    def _on_aac(self, frames: list[tuple[int, bytes]]) -> None:
        assert self.track is not None and self._wall_anchor is not None
        pts0, wall0 = self._wall_anchor
        for pts, data in frames:
            self.publisher.send(Frame(self.track, pts, pts, True, data, wall0 + (pts - pts0) / SAMPLE_RATE))

    def on_rtp(self, data: bytes, now: float, wall: float, source: Address | None = None) -> bool:
        """One RTP datagram (from `source`, over UDP); False if it was not the sender's: from
        another address than the track's source, or of another SSRC than the sender's while
        the sender's has not been silent for SOURCE_SILENCE (a stranger's packets would
        otherwise resynchronise the jitter buffer onto theirs)."""
        if source is not None and self.rtp_source is not None and not self.rtp_source.admit(source, now):
            self._foreign(f"RTP from {source[0]}:{source[1]}, the source is {self.rtp_source.describe()}")
            return False
        try:
            packet = parse_rtp(data)
        except RtpError as e:
            self.bad_packets += 1
            self._report_bad("a bad RTP packet", self.bad_packets, e)
            return True
        if packet.payload_type == self.media.rtx_payload_type:
            return self._on_rtx(packet, now, wall)
        if packet.payload_type != self.media.payload_type:
            return True
        if packet.ssrc != self.ssrc or self._ssrc_seen is None:
            silent = now - self._ssrc_seen if self._ssrc_seen is not None else None
            if silent is not None and silent < SOURCE_SILENCE:
                self._foreign(f"SSRC {packet.ssrc:08x}, the sender's is {self.ssrc:08x}")
                return False
            if silent is not None:
                log.info(
                    "rtp %s: SSRC %08x silent for %.1f s, following SSRC %08x",
                    self.peer,
                    self.ssrc,
                    silent,
                    packet.ssrc,
                )
            self.ssrc = packet.ssrc
            self.rtx_ssrc = 0  # a new sender: its retransmissions come from a new SSRC too
        self._ssrc_seen = now
        self.jitter.push(packet.sequence, packet.timestamp, packet.ssrc, packet, now)
        self.drain(now, wall)
        return True

    def _on_rtx(self, packet: RtpPacket, now: float, wall: float) -> bool:
        """A retransmission (RFC 4588 section 4, session multiplexing: its own SSRC and payload
        type, the original sequence number (OSN) in the first two bytes of the payload, the
        original payload after it), restored into the original stream (its payload type,
        sequence number and SSRC) before the jitter buffer. False if it came from another
        SSRC than the sender's retransmissions."""
        if not self.ssrc:
            return True  # no original stream yet to restore it into
        if self.rtx_ssrc == 0:
            self.rtx_ssrc = packet.ssrc
        elif packet.ssrc != self.rtx_ssrc:
            self._foreign(f"RTX SSRC {packet.ssrc:08x}, the sender's is {self.rtx_ssrc:08x}")
            return False
        data, start, stop = packet.data, packet.payload_start, packet.payload_end
        if stop - start < 2:
            self.bad_packets += 1
            self._report_bad("a bad RTP packet", self.bad_packets, "RTX payload without its original sequence number")
            return True
        header = bytearray(data[:start])
        header[0] &= 0xDF  # no padding: the original payload ends the datagram
        header[1] = (header[1] & 0x80) | self.media.payload_type
        header[2:4] = data[start : start + 2]
        header[8:12] = self.ssrc.to_bytes(4, "big")
        original = parse_rtp(bytes(header) + bytes(data[start + 2 : stop]))
        self.rtx_received += 1
        if self.jitter.push(original.sequence, original.timestamp, original.ssrc, original, now, True):
            self.rtx_recovered += 1
        self.drain(now, wall)
        return True

    def drain(self, now: float, wall: float) -> None:
        """Depacketize what the jitter buffer releases at `now`; frames are stamped with
        `wall` (seconds since the epoch) until the sender's reports map RTP time to it."""
        for packet in self.jitter.pop(now):
            if self._last_seq >= 0 and packet.sequence != (self._last_seq + 1) & 0xFFFF:
                self.depacketizer.lost()
            self._last_seq = packet.sequence
            try:
                units = self.depacketizer.push(packet)
            except RtpError as e:
                self.bad_packets += 1
                self._report_bad("a bad RTP payload", self.bad_packets, e)
                continue
            for unit in units:
                track = self._frames_track or self._track()
                if track is None:
                    continue
                for frame in self.frames.push(track, unit, wall):
                    self._send(frame)

    def _on_repaired(self, frames: list[RepairedFrame]) -> None:
        assert self.track is not None and self._wall_anchor is not None
        pts0, wall0 = self._wall_anchor
        for f in frames:
            self.publisher.send(
                Frame(self.track, f.pts, f.pts, f.keyframe, f.data, wall0 + (f.pts - pts0) / VIDEO_TIMEBASE)
            )

    def _send(self, frame: Frame) -> None:
        if self.transcoder is None and self.repairer is None:
            self.publisher.send(frame)
            return
        if self._wall_anchor is None:
            self._wall_anchor = (frame.pts, frame.wallclock)
        if self.transcoder is not None:
            self.transcoder.submit(frame.pts, frame.data)
        elif self.repairer is not None:
            self._repair(self.repairer, frame)

    def _repair(self, repairer: ThreadedTranscoder[RepairedFrame], frame: Frame) -> None:
        """Hand a source frame to the repair. One that is REPAIR_MAX_BACKLOG frames behind
        does not keep up with real time: source frames are dropped (the picture freezes, a
        PLI asks for a keyframe) rather than latency growing, until a keyframe finds room or
        the backlog has drained to half. Frames taken again without a keyframe are decoded
        with the dropped ones concealed, as lost ones are: a pure keyframe wait would turn a
        one-second stall of an overloaded host into a freeze of up to a GOP more."""
        if self._repair_wait and not frame.keyframe and repairer.backlog > REPAIR_MAX_BACKLOG // 2:
            self.repair_skipped += 1
            return
        if repairer.submit(frame.pts, frame.dts, frame.data):
            self._repair_wait = False
            return
        self.repair_skipped += 1
        if not self._repair_wait:
            log.warning(
                "rtp %s: the video repair is %d frames behind; dropping frames until it catches up (%d dropped so far)",
                self.peer,
                repairer.backlog,
                self.repair_skipped,
            )
        self._repair_wait = True

    def finish(self, now: float, wall: float) -> None:
        """The session ended: release everything buffered, gaps and reorder window included."""
        self.drain(now + FLUSH_HORIZON, wall)
        track = self._frames_track or self.track
        if track is not None:
            for frame in self.frames.flush(track, wall):
                self._send(frame)
        if self.transcoder is not None:
            self.transcoder.close()
        if self.repairer is not None:
            self.repairer.close()

    def _track(self) -> Track | None:
        """The track RtpToFrames stamps video with, once the parameter sets are known (the
        published one, or with repair the source's, the published one being the encoder's)."""
        if self.track is None and isinstance(self.depacketizer, H264Depacketizer):
            sps, pps = self.depacketizer.sps, self.depacketizer.pps
            if sps is None or pps is None:
                return None
            try:
                source = video_track(sps, pps)
                if self.repair_bitrate is not None:
                    core = H264Repair(source.config, sps, self.repair_bitrate)
                    self._frames_track = source
                    source = video_track(core.sps, core.pps)
                    self.repairer = ThreadedTranscoder(core, self._on_repaired, REPAIR_MAX_BACKLOG, "H.264 repair")
            except H264Error as e:
                raise RtpError(f"bad H.264 parameter sets: {e}") from e
            self.track = source
            self.publisher.update_track(self.track)
        return self._frames_track or self.track
