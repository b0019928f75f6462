"""The plugin API: everything a plugin (commerce, chat, audience) sees of the engine.

A plugin is a class with a `name`, `async start(context)` and `async stop()`. At start it
registers what it needs through its `PluginContext`: HTTP routes under `/api/`, WebSocket
routes under `/live/{stream}/`, lifecycle hooks (stream published / unpublished, viewer
joined / left); it pins timed metadata to a stream through `StreamHandle.add_metadata`, and
learns who calls it through `context.identity(request)`: a verified JWT, never parsed by
the plugin. Its own TOML section arrives as a plain dict in `context.settings`.

The media path never waits for a plugin: hooks are plain callbacks that must return at once
(a plugin with work to do schedules it), and a hook that raises is logged and ignored.

Plugins import this module only (the import-graph test holds it); the names they need from
the rest of the engine are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from mediacore.access.identity import Identity, IdentityError, Role
from mediacore.model.metadata import PRODUCT_CLASS, AttributeValue, MetadataError, TimedMetadata

__all__ = [
    "PRODUCT_CLASS",
    "AttributeValue",
    "Handler",
    "HttpError",
    "Identity",
    "IdentityError",
    "MetadataError",
    "Plugin",
    "PluginContext",
    "PluginError",
    "Role",
    "StreamHandle",
    "StreamHook",
    "TimedMetadata",
    "ViewerHook",
    "cancel_and_wait",
    "read_json",
    "read_json_object",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
StreamHook = Callable[[str], None]
"""Called with the stream's name."""
ViewerHook = Callable[[str, str], None]
"""Called with the stream's name and the viewer's key (a pseudonymous client key)."""


class PluginError(Exception):
    """A plugin cannot start (bad settings, a backend it needs is unreachable): the engine
    refuses to start, with this message."""


class StreamHandle(Protocol):
    """One live (or reconnecting, or recently ended) stream, as a plugin sees it."""

    @property
    def name(self) -> str: ...

    @property
    def publishing(self) -> bool: ...

    def add_metadata(
        self,
        attributes: Mapping[str, AttributeValue],
        start: float | Literal["now"] = "now",
        duration: float | None = None,
        metadata_id: str | None = None,
        cls: str = PRODUCT_CLASS,
    ) -> TimedMetadata:
        """Pin timed metadata (EXT-X-DATERANGE in every playlist, ID3 / emsg in-band). `start`
        is "now" (the PDT of the newest frame received) or seconds since the epoch. Returns
        the item with its `id` and `start_date`; MetadataError when refused (nothing added)."""
        ...


class PluginContext(Protocol):
    """What the engine gives one plugin."""

    @property
    def settings(self) -> Mapping[str, Any]:
        """The plugin's own TOML section (`[commerce]` for the commerce plugin), unchecked."""
        ...

    @property
    def data_dir(self) -> Path:
        """A directory of the plugin's own for embedded state (SQLite files); created."""
        ...

    @property
    def registry(self) -> CollectorRegistry:
        """Where the plugin's Prometheus metrics go (served with the engine's on /metrics)."""
        ...

    @property
    def loopback_only(self) -> bool:
        """Whether every listener of the engine is bound to loopback (a demo or a test):
        conveniences such as guest tokens may default to on then."""
        ...

    def clock(self) -> float:
        """Monotonic seconds."""
        ...

    def wall_clock(self) -> float:
        """Seconds since the epoch."""
        ...

    @property
    def home(self) -> bool:
        """False in a worker of `serve --workers N` other than the home worker: there the
        plugin's routes naming no stream, its machine-wide routes and its machine-wide hooks
        never run (the home worker answers them), so a plugin whose state is all the
        machine's need not keep it (a store, a model) in every worker."""
        ...

    def stream(self, name: str) -> StreamHandle | None:
        """The stream `name`, or None. With `serve --workers N`, a stream another worker of
        the machine serves is one too: live, and its add_metadata raises MetadataError (add
        metadata from a route that names the stream, which its owner answers)."""
        ...

    def stream_names(self) -> list[str]:
        """Every stream the engine holds (live, reconnecting, or ended and still served), and
        with workers those the machine's other workers serve."""
        ...

    def add_route(self, method: str, path: str, handler: Handler, *, machine: bool = False) -> None:
        """An HTTP route on the public port; `path` starts with `/api/` (aiohttp syntax).
        With `serve --workers N`, a route whose path names `{stream}` is answered by the worker
        that owns the stream, any other by the home worker; `machine`: by the home worker
        even if it names a stream (its state is the machine's: a funnel fed by orders)."""
        ...

    def add_websocket(self, path: str, handler: Handler, *, machine: bool = False) -> None:
        """A WebSocket route below `/live/{stream}/` (e.g. `/live/{stream}/chat`); `machine`
        as for add_route."""
        ...

    def add_page_script(self, name: str, path: Path) -> None:
        """A script of the plugin's own that the watch page loads (`name`, e.g. `chat.js`,
        served at `/static/plugins/NAME`): the page gets a plugin's pane only while that
        plugin runs."""
        ...

    def on_stream_published(self, hook: StreamHook) -> None: ...

    def on_stream_unpublished(self, hook: StreamHook) -> None: ...

    def on_viewer_joined(self, hook: ViewerHook, *, machine: bool = False) -> None:
        """`hook(stream, viewer)` when a viewer starts watching. With `serve --workers N` it
        runs in the worker that owns the stream; `machine`: in the home worker, for the
        streams of every worker (a model of the whole audience)."""
        ...

    def on_viewer_left(self, hook: ViewerHook, *, machine: bool = False) -> None: ...

    def identity(self, request: web.Request) -> Identity | None:
        """The caller's verified identity (a JWT in `Authorization: Bearer`, or in the
        `access_token` query parameter of a WebSocket upgrade, which browsers cannot give
        headers), or None when there is none. IdentityError for a token that is present but
        invalid or expired: answer it with 401."""
        ...

    def issue_token(self, sub: str, role: Role, ttl: float) -> str:
        """A JWT the engine will accept, for plugins that are the identity provider
        (embedded accounts, guest tokens)."""
        ...

    def client_key(self, request: web.Request) -> str:
        """The caller's address (X-Forwarded-For only from trusted proxies): for per-client
        rate limits."""
        ...


class Plugin(Protocol):
    name: str

    async def start(self, context: PluginContext) -> None:
        """Register routes and hooks; open backends. PluginError refuses the engine's start."""
        ...

    async def stop(self) -> None:
        """Close backends; called once, after the public port stopped serving."""
        ...


# Helpers for plugins' HTTP routes and background tasks ------------------------------------


class HttpError(Exception):
    """Ends a plugin's request with `status` and the JSON `{"error": code, "detail": detail}`
    (no "detail" when it is empty); `response()` is that answer."""

    def __init__(self, status: int, code: str, detail: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or code)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> web.Response:
        body: dict[str, str] = {"error": self.code}
        if self.detail:
            body["detail"] = self.detail
        return web.json_response(body, status=self.status, headers=self.headers)


async def read_json(request: web.Request, max_bytes: int) -> Any:
    """The request's body as JSON, reading no more than `max_bytes` (+1) of it: HttpError 413
    "too_large" for a longer body (by Content-Length or as read), 400 "bad_request" when it
    is not JSON."""
    too_large = HttpError(413, "too_large", f"the body may be at most {max_bytes} bytes")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    raw = b""
    while len(raw) <= max_bytes:
        chunk = await request.content.read(max_bytes + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > max_bytes:
        raise too_large
    try:
        return json.loads(raw)
    except ValueError:  # UnicodeDecodeError is one
        raise HttpError(400, "bad_request", "the body must be JSON") from None


async def read_json_object(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """`read_json`, and HttpError 400 "bad_request" unless the body is a JSON object."""
    data = await read_json(request, max_bytes)
    if not isinstance(data, dict):
        raise HttpError(400, "bad_request", "the body must be a JSON object")
    return data


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancels every task, then waits for each to end (a plugin's background loops at stop)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
