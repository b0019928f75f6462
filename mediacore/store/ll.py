"""LL-HLS renditions in memory: init segments, parent segments, parts, and their playlists.

Rules (HLS-RULES.md) this module keeps:
- EXT-X-PART lines for the parents within the last 3 x TD, and for the parent in progress
  (G1); removed parts stay downloadable 3 x TD longer (G2); removals in order (G3).
- The sliding window, MEDIA-SEQUENCE, DISCONTINUITY-SEQUENCE and TARGETDURATION as for
  plain HLS (mediacore/store/window.py: M2-M5, W4, W5, W7, T1-T3).
- DISCONTINUITY, MAP and PROGRAM-DATE-TIME of a parent come before its first part (L6).
- One PRELOAD-HINT for the next part, never with ENDLIST (H2-H4).
- EXT-X-VERSION is the lowest the playlist needs: 6 for EXT-X-MAP, 9 for EXT-X-SKIP,
  10 for a skip of date ranges (P5, K7).
- Delta updates replace the head segments further from the end than the skip boundary
  (6 x TD) with one EXT-X-SKIP; MEDIA-SEQUENCE keeps its full value (K2, K3, K5).
- Date ranges (timed metadata) are pinned to the part they start in, listed from the moment
  that part is, and removed with their parent. `_HLS_skip=YES` keeps every one (K4);
  `_HLS_skip=v2` leaves out those added more than the skip boundary (CAN-SKIP-UNTIL seconds)
  before the request, and RECENTLY-REMOVED-DATERANGES lists those removed within it (K5);
  CAN-SKIP-DATERANGES=YES is always advertised (C4, K8).
Time (`now`, monotonic seconds) is passed in; waiting is done by the origin on `changed`.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from mediacore.playlist.daterange import DateRange
from mediacore.playlist.media import MediaPlaylist, Part, RenditionReport, Segment, ServerControl
from mediacore.playlist.uris import ll_init_uri, ll_parent_uri, ll_part_uri, ll_rendition_uri
from mediacore.store.notifier import Notifier
from mediacore.store.window import SlidingWindow, Windowed, target_duration

PART_WINDOW_TDS = 3
"""Parts are listed for the parents within this many target durations of the end (G1)."""
SKIP_BOUNDARY_TDS = 6
"""Delta updates skip the segments further than this many target durations from the end
(the recommended CAN-SKIP-UNTIL, K2)."""
PART_HOLD_BACK_PARTS = 3
"""PART-HOLD-BACK in part targets: at least 2, 3 recommended (L3)."""
STANDARD_FRAME_RATES = (23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0)
FRAME_RATE_SNAP = 0.01
"""A measured rate within 1 % of a standard one is reported as that rate."""


@dataclass(slots=True)
class LlPart:
    index: int
    uri: str
    duration: float
    data: bytes | memoryview  # its own bytes until its parent completes, then a view into the parent's
    independent: bool
    gap: bool = False  # no media: listed with GAP=YES, never served


@dataclass(frozen=True, slots=True)
class PinnedDateRange:
    part: int  # index of the part it is listed before
    daterange: DateRange
    added_at: float  # monotonic seconds: when it joined the playlist


@dataclass(slots=True)
class LlSegment:
    msn: int
    uri: str
    init_uri: str
    program_date_time: float
    discontinuity: bool
    parts: list[LlPart] = field(default_factory=list)
    dateranges: list[PinnedDateRange] = field(default_factory=list)
    samples: int = 0
    size: int = 0  # bytes of its parts
    buffer: bytes = b""  # once complete: its parts' bytes, one block, which the parts view
    complete: bool = False
    completed_at: float = 0.0

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.parts)

    @property
    def gap(self) -> bool:
        """A parent made only of GAP parts: listed with EXT-X-GAP, never served."""
        return bool(self.parts) and all(p.gap for p in self.parts)

    def data(self) -> bytes:
        """The parent's bytes: its parts joined (L7)."""
        return self.buffer if self.complete else b"".join(p.data for p in self.parts)


class LlRendition(Windowed[LlSegment]):
    """One LL-HLS rendition; `segments` are its complete parents in the window."""

    def __init__(
        self,
        name: str,
        prefix: str,
        window_segments: int,
        part_target: float,
        segment_duration: float,
        media_sequence: int = 0,
        discontinuity_sequence: int = 0,
    ) -> None:
        """`segment_duration` is the configured one: a short first parent (the stream began
        with a damaged GOP) must not fix a TARGETDURATION that later parents exceed."""
        self.name = name  # "video" or "audio": also the playlist's file name
        self.prefix = prefix
        self.window: SlidingWindow[LlSegment] = SlidingWindow(window_segments, media_sequence, discontinuity_sequence)
        self.part_target = part_target
        self.segment_duration = segment_duration
        self.session_id = secrets.token_hex(4)
        self.target_duration: int | None = None
        self.next_msn = media_sequence
        self.current: LlSegment | None = None  # the parent in progress
        self.inits: dict[str, bytes] = {}
        self.init_uri = ""
        self._pending_discontinuity = False
        # uri -> (a part's data or a parent, whose buffer is its data; expires or None)
        self._by_uri: dict[str, tuple[bytes | memoryview | LlSegment, float | None]] = {}
        self.ended = False
        self.changed = Notifier()
        self.peers: list[LlRendition] = []  # the other renditions, for rendition reports
        # All renditions share one TARGETDURATION (T4); the video rendition fixes it, since
        # only its parents are bound to keyframes. None here means "I fix it myself".
        self.td_source: LlRendition | None = None
        self.bytes_total = 0
        self.changed_at = 0.0  # monotonic time of the last change (for wake-up latency)
        self._rendered: dict[str | None, tuple[str, float]] = {}  # skip mode -> (text, valid until), until a change
        self._removed_dateranges: deque[tuple[str, float]] = deque()  # (ID, monotonic time removed)

    # Production ----------------------------------------------------------------------

    def set_init(self, data: bytes) -> None:
        uri = ll_init_uri(self.prefix, self.session_id, len(self.inits))
        self.inits[uri] = data
        self.init_uri = uri

    def mark_discontinuity(self) -> None:
        self._pending_discontinuity = True

    def add_part(
        self,
        data: bytes,
        duration: float,
        independent: bool,
        starts_parent: bool,
        ends_parent: bool,
        wallclock: float,
        now: float,
        samples: int = 0,
        gap: bool = False,
        dateranges: Sequence[DateRange] = (),
    ) -> LlPart:
        """A part; a GAP part (`gap`) holds a hole in the media's timeline: it has no data,
        and its parent holds nothing but GAP parts (the packager keeps them apart).
        `dateranges` start in this part: listed just before it, from now on."""
        if self.ended:
            raise RuntimeError("part added to an ended rendition")
        if self.current is None or starts_parent:
            if self.current is not None:
                self._complete_current(now)
            msn = self.next_msn
            self.next_msn += 1
            self.current = LlSegment(
                msn,
                ll_parent_uri(self.prefix, self.session_id, msn),
                self.init_uri,
                wallclock,
                self._pending_discontinuity,
            )
            self._pending_discontinuity = False
        seg = self.current
        index = len(seg.parts)
        seg.dateranges.extend(PinnedDateRange(index, dr, now) for dr in dateranges)
        part = LlPart(index, self.part_uri(seg.msn, index), duration, data, independent, gap)
        seg.parts.append(part)
        seg.samples += samples
        seg.size += len(data)
        if not gap:
            self._by_uri[part.uri] = (data, None)
        self.bytes_total += len(data)
        if ends_parent:
            self._complete_current(now)
        self._publish(now)
        return part

    def _complete_current(self, now: float) -> None:
        seg = self.current
        if seg is None:
            return
        self.current = None
        seg.complete = True
        seg.completed_at = now
        if not seg.gap:
            # One block per parent, which its parts become views of: the parts' own blocks
            # (tens of KB, on the allocator's heap) lived as long as the window and left
            # holes between shorter-lived frames; one parent is large enough to be mapped
            # and handed back whole when it expires.
            seg.buffer = b"".join(p.data for p in seg.parts)
            view = memoryview(seg.buffer)
            offset = 0
            for part in seg.parts:
                size = len(part.data)
                part.data = view[offset : offset + size]
                offset += size
                if not part.gap:
                    self._by_uri[part.uri] = (part.data, None)
            self._by_uri[seg.uri] = (seg, None)
        if self.target_duration is None:
            if self.td_source is None:
                self.target_duration = target_duration(seg.duration, self.segment_duration)
                for peer in self.peers:
                    if peer.td_source is self and peer.target_duration is None:
                        peer.target_duration = self.target_duration
            else:
                self.target_duration = self.td_source.target_duration
        for head, retention in self.window.append(seg, self.target_duration or 0):
            self._removed_dateranges.extend((pinned.daterange.id, now) for pinned in head.dateranges)
            expires = now + retention
            if not head.gap:
                self._by_uri[head.uri] = (head, expires)
            for part in head.parts:
                if not part.gap:
                    self._by_uri[part.uri] = (part.data, expires)
        for uri, (_, until) in list(self._by_uri.items()):
            if until is not None and until <= now:
                del self._by_uri[uri]
        removed = self._removed_dateranges
        while removed and removed[0][1] < now - self.skip_boundary():
            removed.popleft()  # no delta update can need it any more (K5)

    def break_timeline(self, now: float) -> None:
        """The media stops here and resumes later on a new timeline (the packager was
        restarted after an error and waits for a keyframe): the parent in progress ends with
        the parts it has (its last part may be short, L5), so the preload hint moves to the
        next parent and blocked requests wake (a request for the abandoned hinted part gets
        404, H7); the next parent carries EXT-X-DISCONTINUITY, and part numbering starts at 0
        in it as in any parent (L2)."""
        if self.ended:
            return
        self._complete_current(now)
        self._pending_discontinuity = True
        self._publish(now)

    def end(self, now: float) -> None:
        if self.ended:
            return
        if self.current is not None and self.current.parts:
            self._complete_current(now)
        self.current = None
        self.ended = True
        self._publish(now)

    def _publish(self, now: float) -> None:
        self.changed_at = now
        self._rendered.clear()
        self.changed.notify()
        for peer in self.peers:
            peer._rendered.clear()  # their rendition reports changed too (R3)
            peer.changed.notify()

    # Queries -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.target_duration is not None and bool(self.window)

    def last_part(self) -> tuple[int, int]:
        """(MSN, part index) of the newest part."""
        if self.current is not None and self.current.parts:
            return self.current.msn, len(self.current.parts) - 1
        last = self.window.segments[-1]
        return last.msn, len(last.parts) - 1

    def last_complete_msn(self) -> int:
        """MSN of the newest complete parent (one below the window's start if none)."""
        segments = self.window.segments
        return segments[-1].msn if segments else self.media_sequence - 1

    def next_part(self) -> tuple[int, int]:
        """The part the preload hint names."""
        if self.current is not None:
            return self.current.msn, len(self.current.parts)
        return self.next_msn, 0

    def part_uri(self, msn: int, index: int) -> str:
        return ll_part_uri(self.prefix, self.session_id, msn, index)

    def has(self, msn: int, part: int | None) -> bool:
        """Does the playlist hold segment `msn` (complete), or part `part` of it or later (B1-B3)?"""
        if self.ended:
            return True
        done_msn = self.last_complete_msn()
        if part is None:
            return msn <= done_msn
        if msn <= done_msn:
            seg = next((s for s in self.window.segments if s.msn == msn), None)
            if seg is None or part < len(seg.parts):
                return True
            msn, part = msn + 1, 0  # B3: past the parent's last part means part 0 of the next
            if msn <= done_msn:
                return True
        current = self.current
        return current is not None and current.msn == msn and len(current.parts) > part

    def resource(self, uri: str, now: float) -> bytes | memoryview | None:
        if uri in self.inits:
            return self.inits[uri]
        item = self._by_uri.get(uri)
        if item is None:
            return None
        data, expires = item
        if expires is not None and expires <= now:
            return None
        return data.buffer if isinstance(data, LlSegment) else data

    def held_bytes(self) -> int:
        """Bytes of media held: every parent and part still downloadable (listed, in
        progress, or retired: G2, W5; an expired one until the next parent prunes it) and
        the init segments. A complete parent's parts are views of its buffer."""
        held = 0
        for data, _ in self._by_uri.values():
            if isinstance(data, LlSegment):
                held += len(data.buffer)
            elif isinstance(data, bytes):
                held += len(data)
        return held + sum(len(init) for init in self.inits.values())

    def frame_rate(self) -> float:
        """Frames per second: the median rate of the parents in the window, snapped to a
        standard rate within 1 %. FRAME-RATE is the content's rate; a parent stretched by a
        late keyframe, or one that lost frames to a slow moment, must not make 30 fps read
        as 29.5."""
        rates = sorted(s.samples / s.duration for s in self.window.segments if s.duration > 0 and not s.gap)
        if not rates:
            return 0.0
        measured = rates[len(rates) // 2]
        nominal = min(STANDARD_FRAME_RATES, key=lambda r: abs(r - measured))
        return nominal if abs(measured - nominal) <= FRAME_RATE_SNAP * nominal else measured

    def bandwidth(self) -> tuple[int, int]:
        """(peak, average) bits per second over the complete segments in the window."""
        rates = [s.size * 8 / s.duration for s in self.window.segments if s.duration > 0 and not s.gap]
        if not rates:
            return 0, 0
        return int(max(rates)), int(sum(rates) / len(rates))

    # Rendering -----------------------------------------------------------------------

    def skip_boundary(self) -> float:
        return float(SKIP_BOUNDARY_TDS * (self.target_duration or 1))

    def playlist(self, skip: str | None = None, now: float | None = None) -> MediaPlaylist:
        """The media playlist; `skip` is the _HLS_skip value (YES or v2) for a delta update,
        `now` (monotonic seconds, default: the last change) the time of the request, which
        decides the date ranges of a v2 delta (K5)."""
        return self._playlist(skip, self.changed_at if now is None else now)[0]

    def _playlist(self, skip: str | None, now: float) -> tuple[MediaPlaylist, float]:
        """The playlist, and until when (monotonic seconds) its date ranges stay right."""
        td = self.target_duration or 1
        segments = list(self.window.segments)
        skipped = 0
        if skip in ("YES", "v2") and not self.ended:
            remaining = sum(s.duration for s in segments)
            for seg in segments:
                if remaining - seg.duration < self.skip_boundary():
                    break
                remaining -= seg.duration
                skipped += 1
        listed = segments[skipped:]
        if self.current is not None and not self.ended:
            listed.append(self.current)
        # K5: a v2 delta leaves out the date ranges added more than the skip boundary ago and
        # names those removed within it; YES and full playlists list every date range.
        v2 = bool(skipped) and skip == "v2"
        oldest = now - self.skip_boundary()
        valid_until = float("inf")

        def kept(pinned: PinnedDateRange) -> bool:
            nonlocal valid_until
            if not v2:
                return True
            if pinned.added_at < oldest:
                return False
            valid_until = min(valid_until, pinned.added_at + self.skip_boundary())
            return True

        removed_ids = None
        if v2:
            recent = [(ident, at) for ident, at in self._removed_dateranges if at >= oldest]
            removed_ids = "\t".join(ident for ident, _ in recent)
            if recent:
                valid_until = min(valid_until, recent[0][1] + self.skip_boundary())
        skipped_dateranges = [p.daterange for seg in segments[:skipped] for p in seg.dateranges if kept(p)]
        # Parts are listed for the parents within 3 x TD of the end (G1).
        part_from = len(listed)
        tail = 0.0
        for i in range(len(listed) - 1, -1, -1):
            part_from = i
            tail += listed[i].duration
            if tail >= PART_WINDOW_TDS * td:
                break
        reports = []
        for peer in self.peers:
            if peer.ready:
                last_msn, last_part = peer.last_part()
                reports.append(RenditionReport(ll_rendition_uri(peer.name), last_msn, last_part))
        msn, index = self.next_part()
        playlist = MediaPlaylist(
            target_duration=td,
            # P5, K7: 6 for EXT-X-MAP, 9 for EXT-X-SKIP, 10 for a skip of date ranges
            version=6 if not skipped else (10 if skip == "v2" else 9),
            media_sequence=self.media_sequence,
            discontinuity_sequence=self.discontinuity_sequence,
            segments=[
                Segment(
                    seg.msn,
                    seg.uri if seg.complete else None,
                    seg.duration if seg.complete else 0.0,
                    seg.program_date_time,
                    seg.discontinuity,
                    seg.gap and seg.complete,
                    seg.init_uri or None,
                    [Part(p.uri, p.duration, p.independent, p.gap) for p in seg.parts] if i >= part_from else [],
                    [(p.part, p.daterange) for p in seg.dateranges if kept(p)],
                )
                for i, seg in enumerate(listed)
            ],
            ended=self.ended,
            server_control=ServerControl(
                can_block_reload=True,
                can_skip_until=self.skip_boundary(),
                can_skip_dateranges=True,
                part_hold_back=PART_HOLD_BACK_PARTS * self.part_target,
            ),
            part_target=self.part_target,
            skipped_segments=skipped,
            recently_removed_dateranges=removed_ids,
            skipped_dateranges=skipped_dateranges,
            preload_hint=None if self.ended else self.part_uri(msn, index),
            rendition_reports=reports,
        )
        return playlist, valid_until

    def render(self, skip: str | None = None, now: float | None = None) -> str:
        """The playlist text, rendered once per change: every request woken by a part gets
        the same text. A v2 delta is rendered again, without a change, once time alone
        changes its date ranges (`now`: monotonic seconds, default: the last change)."""
        mode = skip if skip in ("YES", "v2") else None
        at = self.changed_at if now is None else now
        cached = self._rendered.get(mode)
        if cached is not None and at < cached[1]:
            return cached[0]
        playlist, valid_until = self._playlist(mode, at)
        text = playlist.render()
        self._rendered[mode] = (text, valid_until)
        return text
