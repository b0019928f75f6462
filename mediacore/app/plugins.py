"""The engine's side of the plugin API (mediacore/plugins/api.py): loads the enabled plugins,
gives each a context, and turns the engine's events into the plugins' hooks.

A hook that raises is logged and forgotten, never propagated into the hub or the origin: a
broken plugin must not stop a stream.
"""

from __future__ import annotations

import importlib
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry

from mediacore.access.identity import Identity, Role, TokenCache, bearer, issue
from mediacore.app.config import PLUGIN_SECTIONS, Config, ConfigError, is_loopback
from mediacore.hub.hub import Hub, Stream
from mediacore.model.metadata import PRODUCT_CLASS, AttributeValue, MetadataError, TimedMetadata
from mediacore.origin.http import client_address
from mediacore.plugins.api import Handler, Plugin, PluginError, StreamHook, ViewerHook

log = logging.getLogger("mediacore.plugins")

API_PREFIX = "/api/"
WEBSOCKET_PREFIX = "/live/{stream}/"
PAGE_SCRIPT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.js")
"""Names of the plugins' page scripts (served at /static/plugins/NAME: no way out of it)."""
ACCESS_TOKEN_PARAM = "access_token"
"""Query parameter that carries a JWT on a WebSocket upgrade (browsers cannot set headers there)."""


def load_plugin(name: str) -> Plugin:
    """An instance of the plugin registered under `name` in PLUGIN_SECTIONS."""
    where = PLUGIN_SECTIONS.get(name)
    if where is None:
        raise ConfigError(f"unknown plugin {name!r}")
    module_name, _, class_name = where.partition(":")
    plugin: Plugin = getattr(importlib.import_module(module_name), class_name)()
    return plugin


class StreamView:
    """A stream as a plugin sees it: its name, whether it is live, and timed metadata."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    @property
    def name(self) -> str:
        return self._stream.name

    @property
    def publishing(self) -> bool:
        return self._stream.publishing

    def add_metadata(
        self,
        attributes: Mapping[str, AttributeValue],
        start: float | Literal["now"] = "now",
        duration: float | None = None,
        metadata_id: str | None = None,
        cls: str = PRODUCT_CLASS,
    ) -> TimedMetadata:
        return self._stream.add_metadata(attributes, start, duration, metadata_id, cls)


class ElsewhereStream:
    """A stream another worker of this machine serves (`serve --workers N`), as a plugin on
    this worker sees it: it exists and is live; its timed metadata is added by its owner."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def publishing(self) -> bool:
        return True

    def add_metadata(self, *args: Any, **kwargs: Any) -> TimedMetadata:
        """Refused (StreamHandle.add_metadata's arguments): the owner pins a stream's metadata."""
        raise MetadataError(f"stream {self._name} is served by another worker: add its metadata there")


@dataclass
class Machine:
    """What the plugins of one worker of `serve --workers N` know of the others."""

    elsewhere: Callable[[], Mapping[str, int]]
    """Names the other workers serve, with their worker's index."""
    home: bool
    """Whether this is the home worker (machine-wide routes and hooks run here)."""
    relay: Callable[[str, str, str], None]
    """Send a viewer event (JOINED or LEFT, stream, viewer) to the home worker."""


JOINED = "joined"
LEFT = "left"


class Hooks:
    """The plugins' hooks, called safely from the engine's events. A viewer hook registered
    as machine-wide runs on the home worker for every worker's streams: the others relay
    their viewer events there (`machine.relay`) instead of running it."""

    def __init__(self) -> None:
        self.published: list[StreamHook] = []
        self.unpublished: list[StreamHook] = []
        self.joined: list[ViewerHook] = []
        self.left: list[ViewerHook] = []
        self.machine_joined: list[ViewerHook] = []
        self.machine_left: list[ViewerHook] = []
        self.machine: Machine | None = None

    @staticmethod
    def _call(hook: Callable[..., None], *args: str) -> None:
        try:
            hook(*args)
        except Exception as e:
            log.error("plugin hook %r failed: %r", hook, e, exc_info=e)

    def stream_published(self, stream: Stream) -> None:
        for hook in self.published:
            self._call(hook, stream.name)

    def stream_unpublished(self, stream: Stream) -> None:
        for hook in self.unpublished:
            self._call(hook, stream.name)

    def viewer_joined(self, stream: str, viewer: str) -> None:
        for hook in self.joined:
            self._call(hook, stream, viewer)
        self._machine_wide(JOINED, stream, viewer)

    def viewer_left(self, stream: str, viewer: str) -> None:
        for hook in self.left:
            self._call(hook, stream, viewer)
        self._machine_wide(LEFT, stream, viewer)

    def _machine_wide(self, event: str, stream: str, viewer: str) -> None:
        hooks = self.machine_joined if event == JOINED else self.machine_left
        if not hooks:
            return
        if self.machine is None or self.machine.home:
            self.relayed(event, stream, viewer)
        else:
            self.machine.relay(event, stream, viewer)

    def relayed(self, event: str, stream: str, viewer: str) -> None:
        """A viewer event for the machine-wide hooks (on the home worker: from any worker)."""
        for hook in self.machine_joined if event == JOINED else self.machine_left if event == LEFT else ():
            self._call(hook, stream, viewer)


class Context:
    """One plugin's PluginContext."""

    def __init__(
        self,
        name: str,
        config: Config,
        hub: Hub,
        hooks: Hooks,
        routes: list[web.RouteDef],
        machine_routes: set[str],
        page_scripts: dict[str, Path],
        registry: CollectorRegistry,
        jwt_secret: bytes,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.name = name
        self._config = config
        self._hub = hub
        self._hooks = hooks
        self._routes = routes
        self._machine_routes = machine_routes
        self._page_scripts = page_scripts
        self._registry = registry
        self._jwt_secret = jwt_secret
        self._tokens = TokenCache(jwt_secret)
        self._clock = clock
        self._wall_clock = wall_clock
        self._data_dir = Path(config.server.data_dir) / name

    @property
    def settings(self) -> Mapping[str, Any]:
        return self._config.plugin_settings.get(self.name, {})

    @property
    def data_dir(self) -> Path:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        return self._data_dir

    @property
    def registry(self) -> CollectorRegistry:
        return self._registry

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self._config.server.host)

    def clock(self) -> float:
        return self._clock()

    def wall_clock(self) -> float:
        return self._wall_clock()

    @property
    def home(self) -> bool:
        machine = self._hooks.machine
        return machine is None or machine.home

    def stream(self, name: str) -> StreamView | ElsewhereStream | None:
        stream = self._hub.get(name)
        if stream is not None:
            return StreamView(stream)
        machine = self._hooks.machine
        return ElsewhereStream(name) if machine is not None and name in machine.elsewhere() else None

    def stream_names(self) -> list[str]:
        machine = self._hooks.machine
        return sorted(set(self._hub.streams).union(machine.elsewhere() if machine is not None else ()))

    def add_route(self, method: str, path: str, handler: Handler, *, machine: bool = False) -> None:
        if not path.startswith(API_PREFIX):
            raise PluginError(f"plugin {self.name}: HTTP routes live under {API_PREFIX}, not {path}")
        self._routes.append(web.route(method, path, handler))
        if machine:
            self._machine_routes.add(path)

    def add_websocket(self, path: str, handler: Handler, *, machine: bool = False) -> None:
        if not path.startswith(WEBSOCKET_PREFIX):
            raise PluginError(f"plugin {self.name}: WebSocket routes live under {WEBSOCKET_PREFIX}, not {path}")
        self._routes.append(web.get(path, handler))
        if machine:
            self._machine_routes.add(path)

    def add_page_script(self, name: str, path: Path) -> None:
        if not PAGE_SCRIPT_NAME.fullmatch(name) or name in self._page_scripts or not path.is_file():
            raise PluginError(f"plugin {self.name}: page script {name!r} ({path}) is not a new .js file name and file")
        self._page_scripts[name] = path

    def on_stream_published(self, hook: StreamHook) -> None:
        self._hooks.published.append(hook)

    def on_stream_unpublished(self, hook: StreamHook) -> None:
        self._hooks.unpublished.append(hook)

    def on_viewer_joined(self, hook: ViewerHook, *, machine: bool = False) -> None:
        (self._hooks.machine_joined if machine else self._hooks.joined).append(hook)

    def on_viewer_left(self, hook: ViewerHook, *, machine: bool = False) -> None:
        (self._hooks.machine_left if machine else self._hooks.left).append(hook)

    def identity(self, request: web.Request) -> Identity | None:
        token = bearer(request.headers.get("Authorization"))
        if token is None and request.headers.get("Upgrade", "").lower() == "websocket":
            token = request.query.get(ACCESS_TOKEN_PARAM) or None
        if token is None:
            return None
        return self._tokens.verify(token, self._wall_clock())

    def issue_token(self, sub: str, role: Role, ttl: float) -> str:
        return issue(self._jwt_secret, sub, role, ttl, self._wall_clock())

    def client_key(self, request: web.Request) -> str:
        return client_address(
            request.remote or "?", request.headers.get("X-Forwarded-For", ""), self._config.http.trusted_proxies
        )


class PluginHost:
    """Owns the enabled plugins: starts them (before the public port opens, so their routes
    are in it), stops them (after it closed)."""

    def __init__(
        self,
        config: Config,
        hub: Hub,
        registry: CollectorRegistry,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.hub = hub
        self.registry = registry
        self.clock = clock
        self.wall_clock = wall_clock
        self.hooks = Hooks()
        self.routes: list[web.RouteDef] = []
        self.machine_routes: set[str] = set()
        """Paths of the plugins' routes the home worker answers whatever stream they name."""
        self.page_scripts: dict[str, Path] = {}
        """Scripts the watch page loads, by name: filled as plugins start (the origin reads it)."""
        self.plugins: list[Plugin] = []
        secret = config.auth.jwt_secret
        self.jwt_secret = secret.encode() if secret else secrets.token_bytes(32)
        hub.on_publish.append(self.hooks.stream_published)
        hub.on_stream_unpublished.append(self.hooks.stream_unpublished)

    async def start(self, plugins: list[Plugin] | None = None) -> None:
        """Start `plugins`, or the configured ones; PluginError (or ConfigError) refuses."""
        chosen = plugins if plugins is not None else [load_plugin(n) for n in self.config.plugins.enabled]
        for plugin in chosen:
            context = Context(
                plugin.name,
                self.config,
                self.hub,
                self.hooks,
                self.routes,
                self.machine_routes,
                self.page_scripts,
                self.registry,
                self.jwt_secret,
                self.clock,
                self.wall_clock,
            )
            await plugin.start(context)
            self.plugins.append(plugin)
            log.info("plugin %s started", plugin.name)

    async def stop(self) -> None:
        while self.plugins:
            plugin = self.plugins.pop()
            try:
                await plugin.stop()
            except Exception as e:
                log.error("plugin %s did not stop cleanly: %r", plugin.name, e, exc_info=e)
