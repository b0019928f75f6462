"""What happens to a stream name after its publisher leaves, sans-I/O: wait `end_grace`
for the publisher to come back (same playlist, a discontinuity), else end the stream
(EXT-X-ENDLIST), keep the ended playlist served for `ended_retention` (W8), then forget it.

The engine feeds events in and applies the actions that fall due; time (`now`, monotonic
seconds) is passed in, so tests drive a clock instead of sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EndStream:
    """No publisher came back within the grace period: write ENDLIST (if `epoch` is still
    the stream's publishing session, so a quick republish is never ended)."""

    name: str
    epoch: int


@dataclass(frozen=True, slots=True)
class ForgetStream:
    """The ended stream's retention passed: drop it, its stores and its counters."""

    name: str


Action = EndStream | ForgetStream


class StreamLifecycle:
    def __init__(self, end_grace: float, ended_retention: float) -> None:
        self.end_grace = end_grace
        self.ended_retention = ended_retention
        self._due: dict[str, tuple[float, Action]] = {}

    def published(self, name: str) -> None:
        """A fresh publish of `name`: nothing of its past is due any more."""
        self._due.pop(name, None)

    def unpublished(self, name: str, epoch: int, now: float) -> None:
        self._due[name] = (now + self.end_grace, EndStream(name, epoch))

    def ended(self, name: str, now: float) -> None:
        """The stream was ended (EndStream applied): forget it after the retention."""
        self._due[name] = (now + self.ended_retention, ForgetStream(name))

    def next_deadline(self) -> float | None:
        return min((due for due, _ in self._due.values()), default=None)

    def due(self, now: float) -> list[Action]:
        """The actions whose time has come, oldest first; each is handed out once."""
        ready = sorted((due, name) for name, (due, _) in self._due.items() if due <= now)
        return [self._due.pop(name)[1] for _, name in ready]
