"""Prometheus metrics (prometheus_client), one registry per engine.

Per-stream figures are read from the hub and stores at scrape time by a collector, so the
media path itself never touches a metric object.

Every label value is bounded: HTTP routes are route templates ("unmatched" for anything
else), never raw paths; statuses are HTTP codes; reasons, kinds and protocols are fixed
words; stream names come from the hub at scrape time, so there are at most [hub]
max_streams of them and a forgotten stream's series disappear with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ingest.rtp.receiver import TrackReceiver
from mediacore.app.publish_auth import REASONS
from mediacore.hub.hub import Stream
from mediacore.hub.priority_queue import AUDIO, KEY, NONREF, REF
from mediacore.origin.viewers import ViewerTracker

DROP_LABELS = {AUDIO: "audio", KEY: "keyframe", REF: "reference", NONREF: "non_reference"}


BLOCKED_WAKE_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
"""Seconds from a part landing to the response of a request blocked on it: sub-millisecond
is the goal, a second is already a stall; millisecond steps up to 5 ms, so a p99 read from
the buckets can be held against a 10 ms budget that another hop (a worker's proxy) shares."""


@dataclass(frozen=True, slots=True)
class ScrapeSources:
    """What the collector reads at scrape time, handed over by the engine."""

    streams: Mapping[str, Stream]
    segments_made: Callable[[str], int]
    viewers: ViewerTracker
    rtp_receivers: Callable[[], Iterable[tuple[str, TrackReceiver]]]
    clock: Callable[[], float]
    failed: Mapping[str, str]
    """Streams marked failed (their packager kept raising), with the reason."""
    media_held: Callable[[], Iterable[tuple[str, str, int]]] = lambda: ()
    """(stream, output, bytes) of the media each output's playlists hold in memory."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rtmp_connections = Counter(
            "mediacore_rtmp_connections", "RTMP connections accepted", registry=self.registry
        )
        self.rtmp_active = Gauge("mediacore_rtmp_active_connections", "RTMP connections open", registry=self.registry)
        self.ingest_errors = Counter(
            "mediacore_ingest_errors",
            "Ingest sessions closed for a protocol or limit violation",
            ["protocol"],
            registry=self.registry,
        )
        self.publish_refused = Counter(
            "mediacore_publish_refused",
            "Publish attempts refused, and publishers stopped on re-check (revoked), by reason",
            ["reason"],
            registry=self.registry,
        )
        for reason in REASONS:
            self.publish_refused.labels(reason)
        self.http_requests = Counter(
            "mediacore_http_requests", "HTTP requests served", ["route", "status"], registry=self.registry
        )
        self.http_bytes = Counter("mediacore_http_response_bytes", "Response body bytes sent", registry=self.registry)
        self.http_refused = Counter(
            "mediacore_http_refused_connections",
            "HTTP connections refused or closed by a listener bound (per_ip, max_connections, header_timeout)",
            ["reason"],
            registry=self.registry,
        )
        self.admin_requests = Counter(
            "mediacore_admin_requests", "Admin listener requests", ["route", "status"], registry=self.registry
        )
        self.packager_errors = Counter(
            "mediacore_packager_errors",
            "Packager tasks that raised (each one restarted, or its stream marked failed), by output",
            ["output"],
            registry=self.registry,
        )
        self.tasks = Gauge(
            "mediacore_asyncio_tasks",
            "asyncio tasks alive in the server's event loop (a count that keeps growing is a leak)",
            registry=self.registry,
        )
        self.tasks.set_function(_task_count)

        self.ll_blocked_wake = Histogram(
            "mediacore_llhls_blocked_response_seconds",
            "From a part being complete to the response of a request blocked on it",
            ["kind"],
            registry=self.registry,
            buckets=BLOCKED_WAKE_BUCKETS,
        )

    def attach(self, sources: ScrapeSources) -> None:
        """Read the engine's parts at scrape time (the media path never touches a metric)."""
        self.registry.register(_EngineCollector(sources))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _task_count() -> int:
    """Tasks of the running loop; 0 when read outside one (a scrape runs inside it)."""
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:
        return 0


class _EngineCollector(Collector):
    def __init__(self, sources: ScrapeSources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        live = GaugeMetricFamily("mediacore_streams", "Streams known to the hub", labels=["state"])
        frames = CounterMetricFamily("mediacore_ingest_frames", "Frames received", labels=["stream", "kind"])
        in_bytes = CounterMetricFamily("mediacore_ingest_bytes", "Media payload bytes received", labels=["stream"])
        segments = CounterMetricFamily("mediacore_hls_segments", "HLS segments produced", labels=["stream"])
        drops = CounterMetricFamily(
            "mediacore_subscriber_dropped_frames",
            "Frames dropped for slow subscribers, by what was dropped",
            labels=["stream", "priority"],
        )
        viewers = GaugeMetricFamily("mediacore_viewers", "Viewers seen recently", labels=["stream"])
        counts = {"live": 0, "idle": 0, "ended": 0, "failed": 0}
        now = self.sources.clock()
        for name, stream in self.sources.streams.items():
            if name in self.sources.failed:
                counts["failed"] += 1
            else:
                counts["live" if stream.publishing else "ended" if stream.ended else "idle"] += 1
            for kind, n in stream.stats.frames.items():
                frames.add_metric([name, kind.value], n)
            in_bytes.add_metric([name], stream.stats.bytes)
            for level, label in DROP_LABELS.items():
                drops.add_metric([name, label], sum(s.queue.dropped_by_priority[level] for s in stream.subscribers))
            segments.add_metric([name], self.sources.segments_made(name))
            viewers.add_metric([name], self.sources.viewers.count(name, now))
        for state, n in counts.items():
            live.add_metric([state], n)
        held = GaugeMetricFamily(
            "mediacore_media_held_bytes",
            "Media bytes an output's playlists hold in memory: listed, retired but still downloadable, in progress",
            labels=["stream", "output"],
        )
        for name, output, n in self.sources.media_held():
            held.add_metric([name, output], n)
        yield from (live, frames, in_bytes, segments, drops, viewers, held)
        yield from self._rtp()

    def _rtp(self) -> Iterator[Metric]:
        """Per-track RTP counters of live RTSP sessions and raw RTP inputs (they restart with
        each session, as Prometheus counters may)."""
        packets = CounterMetricFamily(
            "mediacore_rtp_packets",
            "RTP packets by what became of them (received, lost, late, duplicate, "
            "reordered, bad, bad_rtcp, orphan_fragment, foreign: from a stranger's address or SSRC; "
            "nacked: sequence numbers asked for in NACKs; rtx_received; "
            "rtx_recovered: retransmissions that filled a gap)",
            labels=["stream", "media", "event"],
        )
        dropped = CounterMetricFamily(
            "mediacore_rtp_dropped_frames",
            "Frames dropped after loss: damaged (video; AAC in LATM: its AudioMuxElement), or skipped until a keyframe",
            labels=["stream", "media", "reason"],
        )
        jitter = GaugeMetricFamily(
            "mediacore_rtp_jitter_seconds", "RFC 3550 interarrival jitter", labels=["stream", "media"]
        )
        for stream, receiver in self.sources.rtp_receivers():
            media = receiver.media.kind
            for event, n in receiver.counters().items():
                if event.endswith("_frames"):
                    dropped.add_metric([stream, media, event.removesuffix("_frames")], n)
                else:
                    packets.add_metric([stream, media, event], n)
            jitter.add_metric([stream, media], receiver.jitter.jitter / receiver.media.clock_rate)
        yield from (packets, dropped, jitter)
