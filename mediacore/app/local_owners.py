"""Which worker of this machine owns each stream: one small file per name in the run
directory (tmpfs), shared by the workers of one `mediacore serve --workers N` and their
parent.

    RUN_DIR/streams/NAME     the owner's worker index (created with link(2): atomic, and
                             never seen half written)
    RUN_DIR/workers/I.json   worker I's pid and its private HTTP and admin ports
    RUN_DIR/keys/NAME        a publish key the operator set through the admin API
                             (rotate, revoke) on any worker, read by every worker's
                             publish authorizer (SharedPublishKeys)

A name is held by at most one worker at a time: `claim()` creates the file only if it does
not exist. A worker releases what it forgot (its `Registry` rounds, engine.py); the parent
releases every name of a worker that died (`release_worker`) before it restarts it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path

from mediacore.model.names import is_stream_name

STREAMS = "streams"
WORKERS = "workers"
KEYS = "keys"
SHM = Path("/dev/shm")
"""Where run directories go when the machine has a tmpfs there (Linux); else the temp dir."""
MAX_RECORD_BYTES = 256
"""Largest owner or worker record read back: a few integers; anything bigger is not ours."""


def default_run_dir(parent_pid: int) -> Path:
    """The run directory of the `mediacore serve` whose parent process is `parent_pid`."""
    base = SHM if SHM.is_dir() else Path(tempfile.gettempdir())
    return base / f"mediacore-{parent_pid}"


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """How to reach one worker from another: its private listeners on loopback."""

    pid: int
    http_port: int
    admin_port: int


def _read(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            return f.read(MAX_RECORD_BYTES).decode("ascii", "replace")
    except OSError:
        return None


def _write_atomically(path: Path, text: str, replace: bool) -> bool:
    """Write `text` to `path` through a temporary file: renamed over it (`replace`) or linked
    to it only if it does not exist (False then)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class LocalOwners:
    def __init__(self, run_dir: Path, index: int = -1) -> None:
        """`index`: this worker's (-1 for the parent, which owns nothing)."""
        self.run_dir = run_dir
        self.index = index
        self.streams = run_dir / STREAMS
        self.workers = run_dir / WORKERS

    def create(self) -> None:
        self.streams.mkdir(parents=True, exist_ok=True)
        self.workers.mkdir(parents=True, exist_ok=True)
        (self.run_dir / KEYS).mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        if not is_stream_name(name):
            raise ValueError(f"not a stream name: {name!r}")
        return self.streams / name

    def owner(self, name: str) -> int | None:
        """The index of the worker that holds `name`, or None."""
        text = _read(self._path(name))
        try:
            return int(text) if text is not None else None
        except ValueError:
            return None

    def claim(self, name: str) -> int:
        """Take `name` for this worker unless another holds it; returns the holder's index
        (this worker's when it holds the name now)."""
        path = self._path(name)
        for _ in range(2):  # a holder that releases between our link and our read: once more
            if _write_atomically(path, str(self.index), replace=False):
                return self.index
            owner = self.owner(name)
            if owner is not None:
                return owner
        return self.index if self.owner(name) == self.index else -1

    def release(self, name: str) -> None:
        """Give `name` up, if this worker still holds it."""
        if self.owner(name) == self.index:
            self._path(name).unlink(missing_ok=True)

    def holders(self) -> dict[str, int]:
        """Every held name with its worker's index."""
        held = {}
        for entry in os.scandir(self.streams):
            if not entry.name.startswith("."):
                owner = self.owner(entry.name)
                if owner is not None:
                    held[entry.name] = owner
        return held

    def owned_counts(self) -> Counter[int]:
        """Streams held per worker index."""
        return Counter(self.holders().values())

    def release_worker(self, index: int) -> list[str]:
        """Remove every name worker `index` holds and its record (it died); returns the names."""
        released = []
        for entry in os.scandir(self.streams):
            if not entry.name.startswith(".") and self.owner(entry.name) == index:
                Path(entry.path).unlink(missing_ok=True)
                released.append(entry.name)
        (self.workers / f"{index}.json").unlink(missing_ok=True)
        return released

    def publish_info(self, info: WorkerInfo) -> None:
        """Record how other workers reach this one (replacing a previous run's record)."""
        _write_atomically(self.workers / f"{self.index}.json", json.dumps(asdict(info)), replace=True)

    def info(self, index: int) -> WorkerInfo | None:
        text = _read(self.workers / f"{index}.json")
        if text is None:
            return None
        try:
            raw = json.loads(text)
            return WorkerInfo(int(raw["pid"]), int(raw["http_port"]), int(raw["admin_port"]))
        except (ValueError, KeyError, TypeError):
            return None

    def peers(self) -> list[WorkerInfo]:
        """Every other worker's record."""
        found = []
        for entry in os.scandir(self.workers):
            stem = entry.name.removesuffix(".json")
            if entry.name.endswith(".json") and stem.isdigit() and int(stem) != self.index:
                info = self.info(int(stem))
                if info is not None:
                    found.append(info)
        return found


class SharedPublishKeys(MutableMapping[str, str]):
    """The per-stream publish keys of every worker of one machine: the configured ones, and
    over them the keys the admin API set (rotate, revoke) on any worker, one 0600 file per
    name in the run directory. A key rotated on one worker must hold on all of them: the
    encoder's next connection may be handed to any worker, which would otherwise still
    accept the old key. Read on each publish attempt (one small file; a publish is rare)."""

    def __init__(self, run_dir: Path, configured: dict[str, str]) -> None:
        self.configured = configured
        self.directory = run_dir / KEYS
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        if not is_stream_name(name):
            raise KeyError(name)
        return self.directory / name

    def __getitem__(self, name: str) -> str:
        if is_stream_name(name):
            text = _read(self._path(name))
            if text is not None:
                return text
        return self.configured[name]

    def __setitem__(self, name: str, key: str) -> None:
        if len(key.encode()) > MAX_RECORD_BYTES:
            raise ValueError(f"a publish key set at run time is at most {MAX_RECORD_BYTES} bytes")
        _write_atomically(self._path(name), key, replace=True)

    def __delitem__(self, name: str) -> None:
        found = name in self.configured
        self.configured.pop(name, None)
        try:
            self._path(name).unlink()
        except (FileNotFoundError, KeyError):
            if not found:
                raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        names = set(self.configured)
        names.update(e.name for e in os.scandir(self.directory) if not e.name.startswith("."))
        return iter(sorted(names))

    def __len__(self) -> int:
        return sum(1 for _ in self)
