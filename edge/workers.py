"""Which worker of a multi-process edge owns a stream, and so fetches it from the upstreams.

One owner per stream keeps the origin's load at one request per part however many workers
an edge runs: the others ask the owner over its loopback peer listener. The rule is a
stable hash of the stream name, so every worker (and a restarted one) agrees without
talking to the others. Sans-I/O.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

WORKER_HEADER = "X-Edge-Worker"
"""Which worker answered (sent when the edge runs several), so an operator can tell them apart."""
WORKER_LABEL = "worker"
"""The label telling the workers' samples apart in the edge's /metrics."""


def owner_of(stream: str, workers: int) -> int:
    """The index of the worker that fetches `stream` from the upstreams (CRC-32: stable across
    processes and runs, unlike Python's salted `hash`)."""
    return zlib.crc32(stream.encode()) % workers


def sibling_for(stream: str | None, worker: int, peers: Sequence[str]) -> str | None:
    """The peer listener base URL to fetch `stream` from: its owner's, when that is another
    worker; None when this worker fetches it itself (it owns the stream, the path belongs to
    no stream, or the edge runs one worker)."""
    if stream is None or len(peers) < 2:
        return None
    owner = owner_of(stream, len(peers))
    return None if owner == worker else peers[owner]


class _Families:
    """A collector yielding parsed families as they are (for `generate_latest`)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_metrics(texts: Mapping[int, str]) -> bytes:
    """One Prometheus exposition out of each worker's (worker index -> its text): every sample
    labelled `worker="i"`, each family once with all workers' samples, so a scrape of any
    worker sees them all and counters never seem to reset when another worker answers."""
    merged: dict[str, Metric] = {}
    for worker, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                into.add_sample(sample.name, {**sample.labels, WORKER_LABEL: str(worker)}, sample.value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(merged.values()))
    return generate_latest(registry)
