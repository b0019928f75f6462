"""A viewer's playback buffer on the PROGRAM-DATE-TIME timeline, advanced only when media
arrives (sans-I/O: times are passed in).

Why not a ticker: `player.Viewer` moves its playhead on a 50 ms timer, twenty wake-ups a second
per viewer; with thousands of simulated viewers those wake-ups alone load a core. The playhead
moves at real speed from where it last started playing, so where it is when a part arrives,
and whether it ran dry before that (a stall, at the moment the buffer ran out), follow from the
times alone. Latency (wall clock minus the PDT at the playhead) is sampled at each arrival
while playing, instead of every 50 ms.
"""

from __future__ import annotations

from player_client.player import ViewerStats


class Playback:
    """Stalls and latency of one viewer into `stats`; `resume_after` seconds of buffer restart it."""

    def __init__(self, stats: ViewerStats, resume_after: float) -> None:
        self.stats = stats
        self.resume_after = resume_after
        self.buffer_end: float | None = None  # PDT seconds
        self.playhead = 0.0  # PDT seconds, where it was at `since`
        self.since = 0.0  # monotonic seconds
        self.playing = False
        self.stall_started = 0.0

    def _advance(self, now: float) -> None:
        """The playhead at `now`, and a stall if the buffer ran out before `now`."""
        if not self.playing or self.buffer_end is None:
            return
        at = self.playhead + (now - self.since)
        if at >= self.buffer_end:
            self.stall_started = self.since + (self.buffer_end - self.playhead)
            self.playhead, self.since, self.playing = self.buffer_end, self.stall_started, False
            self.stats.stalls += 1
        else:
            self.playhead, self.since = at, now

    def media(self, now: float, wall: float, start: float, end: float) -> None:
        """Media from PDT `start` to `end` arrived at monotonic `now` (wall clock `wall`)."""
        if self.buffer_end is None:  # the first media: playing starts at once, as player.Viewer does
            self.buffer_end, self.playhead, self.since, self.playing = end, start, now, True
        else:
            self._advance(now)
            self.buffer_end = max(self.buffer_end, end)
            if not self.playing and self.buffer_end - self.playhead >= self.resume_after:
                self.stats.stall_seconds += now - self.stall_started
                self.since, self.playing = now, True
        if self.playing:
            self.stats.latencies.append(wall - self.playhead)
            self.stats.last_playing = now

    def finish(self, now: float) -> None:
        """The end of the run: a buffer that ran dry before it is a stall too."""
        self._advance(now)
