"""The origin's public aiohttp application: every read-only route of the URL contract; CORS
and metrics outside, playback tokens inside (so refusals carry CORS headers and are counted).
Nothing on it changes state; the operator's API is the admin listener (admin.py)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from aiohttp import web

from mediacore.origin import api, hls, llhls, pages
from mediacore.origin.http import (
    MEDIA_PREFIX,
    MEDIA_ROUTES_KEY,
    PLUGIN_MACHINE_ROUTES_KEY,
    PLUGIN_ROUTES_KEY,
    STATE_KEY,
    cluster_owner,
    cors_and_metrics,
    playback_tokens,
    worker_proxy,
)
from mediacore.origin.state import OriginState

MAX_REQUEST_BODY = 64 * 1024
"""Bytes of request body accepted: the origin serves GETs; nothing legitimate sends more."""


def create_app(
    state: OriginState, extra_routes: Sequence[web.AbstractRouteDef] = (), machine_routes: Collection[str] = ()
) -> web.Application:
    """The public app; `extra_routes` are the plugins' (under /api/ and /live/{stream}/), of
    which `machine_routes` (paths) the home worker answers whatever stream they name."""
    app = web.Application(
        middlewares=[cors_and_metrics, worker_proxy, cluster_owner, playback_tokens], client_max_size=MAX_REQUEST_BODY
    )
    app[STATE_KEY] = state
    hls.add_routes(app)
    llhls.add_routes(app)
    api.add_routes(app, state.http.public_metrics)
    pages.add_routes(app)
    app[MEDIA_ROUTES_KEY] = frozenset(
        r.canonical for r in app.router.resources() if r.canonical.startswith(MEDIA_PREFIX)
    )
    own = frozenset(r.canonical for r in app.router.resources())
    app.router.add_routes(extra_routes)
    app[PLUGIN_ROUTES_KEY] = frozenset(r.canonical for r in app.router.resources()) - own
    app[PLUGIN_MACHINE_ROUTES_KEY] = frozenset(machine_routes)
    return app
