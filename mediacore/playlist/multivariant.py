"""Multivariant playlists as data: one render() for the origin, one parse() for clients.

The origin lists one variant (video, or audio alone) with an audio rendition group beside
it; BANDWIDTH and AVERAGE-BANDWIDTH are measured over the window (S4.4.6.2), FRAME-RATE is
the content's rate, CODECS names every codec in the variant and its audio group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediacore.playlist.tags import parse_attributes, yes

STEREO = 2
"""CHANNELS when a track does not say: AAC from our publishers is stereo unless it says otherwise."""


@dataclass(frozen=True, slots=True)
class AudioRendition:
    """An EXT-X-MEDIA TYPE=AUDIO entry."""

    group_id: str
    name: str
    uri: str
    channels: int = STEREO
    default: bool = True
    autoselect: bool = True


@dataclass(frozen=True, slots=True)
class Variant:
    """An EXT-X-STREAM-INF entry and the URI after it."""

    uri: str
    bandwidth: int
    average_bandwidth: int | None = None
    codecs: tuple[str, ...] = ()
    resolution: tuple[int, int] | None = None
    frame_rate: float | None = None
    audio_group: str | None = None


@dataclass(slots=True)
class MultivariantPlaylist:
    variants: list[Variant] = field(default_factory=list)
    audio: list[AudioRendition] = field(default_factory=list)
    independent_segments: bool = True

    def render(self) -> str:
        lines = ["#EXTM3U"]
        if self.independent_segments:
            lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
        for media in self.audio:
            lines.append(
                f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{media.group_id}",NAME="{media.name}",DEFAULT={yes(media.default)},'
                f'AUTOSELECT={yes(media.autoselect)},CHANNELS="{media.channels}",URI="{media.uri}"'
            )
        for variant in self.variants:
            attrs = [f"BANDWIDTH={variant.bandwidth}"]
            if variant.average_bandwidth is not None:
                attrs.append(f"AVERAGE-BANDWIDTH={variant.average_bandwidth}")
            attrs.append(f'CODECS="{",".join(variant.codecs)}"')
            if variant.resolution is not None:
                attrs.append(f"RESOLUTION={variant.resolution[0]}x{variant.resolution[1]}")
            if variant.frame_rate is not None:
                attrs.append(f"FRAME-RATE={variant.frame_rate:.3f}")
            if variant.audio_group is not None:
                attrs.append(f'AUDIO="{variant.audio_group}"')
            lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
            lines.append(variant.uri)
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> MultivariantPlaylist:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if not lines or lines[0] != "#EXTM3U":
            raise ValueError("playlist does not start with #EXTM3U")
        pl = cls(independent_segments=False)
        pending: dict[str, str] | None = None
        for line in lines[1:]:
            tag, _, value = line.partition(":")
            if tag == "#EXT-X-INDEPENDENT-SEGMENTS":
                pl.independent_segments = True
            elif tag == "#EXT-X-MEDIA":
                a = parse_attributes(value)
                if a.get("TYPE") == "AUDIO":
                    pl.audio.append(
                        AudioRendition(
                            a["GROUP-ID"],
                            a.get("NAME", ""),
                            a.get("URI", ""),
                            int(a.get("CHANNELS", "2")),
                            a.get("DEFAULT") == "YES",
                            a.get("AUTOSELECT") == "YES",
                        )
                    )
            elif tag == "#EXT-X-STREAM-INF":
                pending = parse_attributes(value)
            elif not line.startswith("#") and pending is not None:
                resolution = pending.get("RESOLUTION")
                width, _, height = (resolution or "").partition("x")
                pl.variants.append(
                    Variant(
                        line,
                        int(pending["BANDWIDTH"]),
                        int(pending["AVERAGE-BANDWIDTH"]) if "AVERAGE-BANDWIDTH" in pending else None,
                        tuple(c for c in pending.get("CODECS", "").split(",") if c),
                        (int(width), int(height)) if resolution else None,
                        float(pending["FRAME-RATE"]) if "FRAME-RATE" in pending else None,
                        pending.get("AUDIO"),
                    )
                )
                pending = None
        return pl


def is_multivariant(text: str) -> bool:
    """Whether a playlist's text is a multivariant playlist (it lists variants)."""
    return "#EXT-X-STREAM-INF" in text
