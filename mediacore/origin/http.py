"""HTTP pieces every origin route shares: the state key, stream names from the URL, viewer
identity, playlist responses, 404s with a cache lifetime, the CORS + metrics middleware, the
workers middleware (proxies to the worker that owns a stream), the cluster middleware
(redirects to a stream's owner) and the playback-token middleware.

Headers follow docs/hls-rules.md: playlists as application/vnd.apple.mpegurl (P1), gzip when
the client accepts it (S6.2.1); CORS on everything so players on other origins work.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from mediacore.access.tokens import TOKEN_PARAM, Verdict
from mediacore.model.names import is_stream_name
from mediacore.origin.peers import HOP_HEADER, forward, gather_lists
from mediacore.origin.state import OriginState
from mediacore.playlist.query import with_query
from mediacore.playlist.uris import STREAM_ROOT

STATE_KEY: web.AppKey[OriginState] = web.AppKey("origin")
MEDIA_ROUTES_KEY: web.AppKey[frozenset[str]] = web.AppKey("media_routes")
"""The origin's own routes below /live/STREAM/ (playlists, media, thumbnail): the ones the
cluster middleware redirects; plugin routes there (chat) are served on every node."""
PLUGIN_ROUTES_KEY: web.AppKey[frozenset[str]] = web.AppKey("plugin_routes")
PLUGIN_MACHINE_ROUTES_KEY: web.AppKey[frozenset[str]] = web.AppKey("plugin_machine_routes")
"""Plugin routes the home worker answers even when they name a stream (`machine=True`)."""
"""The plugins' routes: with several workers, those naming no stream are served by one."""
STREAM_LIST = "/api/streams"
"""The stream list route: with several workers, every worker's streams merged."""
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
MAX_USER_AGENT = 200
"""Characters of User-Agent kept in a viewer's identity: enough to tell players apart."""
MAX_FORWARDED_FOR = 1024
"""Characters of X-Forwarded-For read: a few dozen hops of proxies, never a memory sink."""
MAX_ADDRESS = 45
"""Longest textual IP address (IPv6 with an embedded IPv4)."""

PROTECTED_HEADER = "X-Mediacore-Protected"
"""Set to 1 on every response (errors included) for a stream that needs a playback token, so
an edge never hands a cached copy to a viewer without one."""
TOKEN_KEY: web.RequestKey[str] = web.RequestKey("playback_token", str)
"""Where the playback middleware leaves a request's verified token for playlist_response()."""
MEDIA_PREFIX = STREAM_ROOT.split("{", 1)[0]
"""/live/: the routes below it are a stream's playlists and media, the ones tokens protect."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def state_of(request: web.Request) -> OriginState:
    return request.app[STATE_KEY]


def not_found(text: str, max_age: int = 1) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=text, headers={"Cache-Control": f"max-age={max_age}"})


def not_yet(text: str) -> web.HTTPNotFound:
    """A 404 for something that will exist soon (a part past the preload hint): no cache may
    keep it, or viewers would be refused the part once it is there."""
    return web.HTTPNotFound(text=text, headers={"Cache-Control": "no-store"})


def client_address(remote: str, forwarded_for: str, trusted_proxies: list[str]) -> str:
    """The viewer's address: the peer's, or, when the peer is a trusted proxy, the nearest
    X-Forwarded-For hop that is not one (hops are appended left to right)."""
    address = remote
    if address in trusted_proxies and forwarded_for:
        for hop in reversed(forwarded_for[:MAX_FORWARDED_FOR].split(",")):
            address = hop.strip()[:MAX_ADDRESS] or address
            if address not in trusted_proxies:
                break
    return address


def client_key(request: web.Request) -> str:
    """Who is watching: address and User-Agent."""
    state = state_of(request)
    address = client_address(
        request.remote or "?", request.headers.get("X-Forwarded-For", ""), state.http.trusted_proxies
    )
    return f"{address}|{request.headers.get('User-Agent', '')[:MAX_USER_AGENT]}"


def stream_name(request: web.Request) -> str:
    name = request.match_info["stream"]
    if not is_stream_name(name):
        raise not_found("no such stream")
    return name


def playlist_response(request: web.Request, text: str, cache_control: str) -> web.Response:
    """A playlist; for a request with a verified playback token, every URI in it carries the
    token (rewritten after rendering: the stores' cached text stays token-free)."""
    token = request.get(TOKEN_KEY)
    if token is not None:
        text = with_query(text, TOKEN_PARAM, token)
    response = web.Response(body=text.encode(), content_type=PLAYLIST_TYPE, headers={"Cache-Control": cache_control})
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression()
    return response


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def cors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = state_of(request)
    cors = state.http.cors_origin
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = request.headers.get("Access-Control-Request-Headers", "*")
        response.headers["Access-Control-Max-Age"] = "86400"
    else:
        try:
            response = await handler(request)
        except web.HTTPException as e:
            response = e
        except Exception:
            state.metrics.http_requests.labels(_route_name(request), "500").inc()
            raise
    if cors:
        response.headers["Access-Control-Allow-Origin"] = cors
        response.headers["Access-Control-Expose-Headers"] = "Age, Content-Length, Date"
    state.metrics.http_requests.labels(_route_name(request), str(response.status)).inc()
    if isinstance(response, web.Response) and response.body is not None and isinstance(response.body, bytes):
        state.metrics.http_bytes.inc(len(response.body))
    if isinstance(response, web.HTTPException):
        raise response
    return response


def stream_list_json(items: list[object]) -> web.Response:
    """The body of GET /api/streams."""
    return web.json_response(items, headers={"Cache-Control": "no-cache"}, dumps=lambda o: json.dumps(o, indent=1))


@web.middleware
async def worker_proxy(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With several workers on this machine: a request naming a stream (any route with
    {stream}: playlists, blocking LL-HLS requests, media, thumbnail, chat and the plugins'
    /api/streams/STREAM/...) that another worker owns is answered by that worker through the
    loopback proxy; the plugins' other routes, and those they declared machine-wide, are
    answered by the home worker (one process holds their in-memory state); GET /api/streams
    lists every worker's streams. A request another worker forwarded (HOP_HEADER) is
    answered here."""
    state = state_of(request)
    routes = state.workers
    if routes is None or HOP_HEADER in request.headers:
        return await handler(request)
    name = request.match_info.get("stream")
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else None
    if canonical in request.app[PLUGIN_MACHINE_ROUTES_KEY]:
        home = routes.home()
        return await (forward(request, home, routes) if home is not None else handler(request))
    if name is not None:
        if name not in state.streams and is_stream_name(name):
            owner = routes.owner_of(name)
            if owner is not None:
                return await forward(request, owner, routes)
        return await handler(request)
    if canonical in request.app[PLUGIN_ROUTES_KEY]:
        home = routes.home()
        if home is not None:
            return await forward(request, home, routes)
    elif canonical == STREAM_LIST and request.method == "GET":
        local = await handler(request)
        if not isinstance(local, web.Response) or local.status != 200 or not isinstance(local.body, bytes):
            return local
        items = json.loads(local.body) + await gather_lists(routes, STREAM_LIST)
        return stream_list_json(sorted(items, key=lambda item: str(item.get("name")) if isinstance(item, dict) else ""))
    return await handler(request)


@web.middleware
async def cluster_owner(request: web.Request, handler: Handler) -> web.StreamResponse:
    """In an origin cluster, a request for the playlists or media of a stream this node does
    not have, which another node owns, is redirected there: 302 to the owner's same path and
    query (`_HLS_msn`, `_HLS_part`, `token` kept), `Cache-Control: no-store` (the owner
    changes when a stream moves). A stream nobody owns gets the route's 404 as on one node."""
    state = state_of(request)
    locate = state.locate
    name = request.match_info.get("stream")
    resource = request.match_info.route.resource
    if (
        locate is None
        or name is None
        or resource is None
        or resource.canonical not in request.app[MEDIA_ROUTES_KEY]
        or name in state.streams
        or not is_stream_name(name)
    ):
        return await handler(request)
    owner = await locate(name)
    if owner is None:
        return await handler(request)
    raise web.HTTPFound(owner.rstrip("/") + request.raw_path, headers={"Cache-Control": "no-store"})


@web.middleware
async def playback_tokens(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route below /live/STREAM/ of a protected stream (playlists, blocking requests,
    segments, parts, init segments) needs a valid `token`: 403 when it is missing, malformed,
    badly signed or for another stream, 410 when it has expired; both `no-store`. The token is
    checked when the request arrives, so a response under way (a blocked request, a download)
    completes even if the token expires meanwhile. Other routes (the watch page, the API) are
    not affected; neither are streams that need no token."""
    state = state_of(request)
    name = request.match_info.get("stream")
    resource = request.match_info.route.resource
    if (
        name is None
        or resource is None
        or not resource.canonical.startswith(MEDIA_PREFIX)
        or not state.playback.protects(name)
    ):
        return await handler(request)
    token = request.query.get(TOKEN_PARAM)
    verdict = state.playback.check(name, token, state.wall_clock())
    marked = {PROTECTED_HEADER: "1"}
    refused = {"Cache-Control": "no-store", **marked}
    if verdict is Verdict.EXPIRED:
        raise web.HTTPGone(text="playback token expired", headers=refused)
    if verdict is not Verdict.VALID:
        raise web.HTTPForbidden(text="playback token missing or invalid", headers=refused)
    request[TOKEN_KEY] = token or ""
    try:
        response = await handler(request)
    except web.HTTPException as e:
        e.headers.update(marked)
        raise
    response.headers.update(marked)
    return response
