"""The admin listener: /metrics, /healthz, GET /api/streams and the operator's mutations.

It runs on its own address ([admin] host/port, loopback by default), never on the public
port, sends no CORS headers (no browser page of another origin may call it) and answers
errors as JSON: {"error": "..."}.

Access:
- mutations (POST/DELETE) need `Authorization: Bearer TOKEN` with [admin] token; with no
  token configured they are refused (403) with a message saying so;
- reads need the token too when the TCP peer is not loopback (X-Forwarded-For plays no
  part), so /metrics is never public by accident of a bind address.
Tokens are compared in constant time.

Mutations (stream names follow mediacore/model/names.py):
- POST /api/streams/NAME/kick: end the publishing session (404 unknown stream, 409 not live
  or its ingest cannot be stopped); the publisher may reconnect if its key still works.
- POST /api/streams/NAME/key: rotate: a new random publish key, returned once in the body,
  replaces the stream's key; the current publisher is kicked and must come back with it.
- DELETE /api/streams/NAME/key: revoke: the stream is locked with a key nobody knows; the
  current publisher is kicked.
- POST /api/streams/NAME/end: kick and end now (EXT-X-ENDLIST without waiting for
  [hls] end_grace); a later publish starts a fresh stream, as after any end.
Keys set here live in memory: they last until the server restarts (the configuration file
is not rewritten).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import Counter

from mediacore.hub.hub import Hub
from mediacore.model.names import is_stream_name
from mediacore.origin import api
from mediacore.origin.config import AdminConfig
from mediacore.origin.http import STREAM_LIST, Handler, stream_list_json
from mediacore.origin.peers import HOP_HEADER, WorkerRoutes, forward, gather_lists
from mediacore.origin.state import OriginState

log = logging.getLogger("mediacore.admin")

KEY_BYTES = 24
"""Random bytes in a rotated or revoking publish key (32 URL-safe characters)."""
READ_METHODS = ("GET", "HEAD")
MAX_BODY = 4096
"""Bytes of request body accepted: no admin request needs one."""


@dataclass(slots=True)
class AdminState:
    config: AdminConfig
    origin: OriginState
    """What the read routes show (the same as the public port's)."""
    hub: Hub
    publish_keys: Callable[[], MutableMapping[str, str]]
    """The per-stream publish keys the publish authorizer reads on every attempt."""
    end_stream: Callable[[str, str], bool]
    """End a stream now (kick its publisher, write ENDLIST): False if it could not be ended."""
    requests: Counter
    """mediacore_admin_requests{route, status}."""
    workers: WorkerRoutes | None = None
    """The other workers' admin listeners (`serve --workers N`): a stream mutation for a
    stream another worker owns is proxied to that worker's. None: one process."""
    refusals: int = 0
    """Requests refused for a missing or wrong token (logged: the first ten, then powers of two)."""


ADMIN_KEY: web.AppKey[AdminState] = web.AppKey("admin")


def _admin(request: web.Request) -> AdminState:
    return request.app[ADMIN_KEY]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": message}, status=status, headers={"Cache-Control": "no-store", **(headers or {})}
    )


def _is_loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _bearer(request: web.Request) -> str:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def access_problem(request: web.Request, token: str) -> web.Response | None:
    """The refusal for this request, or None if it may go on."""
    mutation = request.method not in READ_METHODS
    if not mutation and _is_loopback(request.remote):
        return None
    what = "admin API mutations" if mutation else "admin requests from other hosts"
    if not token:
        return _error(403, f"{what} are disabled: set [admin] token in the configuration")
    given = _bearer(request)
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        return _error(
            401,
            f"{what} need Authorization: Bearer with the [admin] token",
            {"WWW-Authenticate": 'Bearer realm="mediacore-admin"'},
        )
    return None


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    admin = _admin(request)
    refusal = access_problem(request, admin.config.token)
    response: web.StreamResponse
    if refusal is not None:
        response = refusal
        admin.refusals += 1
        n = admin.refusals
        if n <= 10 or n & (n - 1) == 0:
            log.warning(
                "admin: %s %s from %s refused (%d; %d refusals so far)",
                request.method,
                _route(request),
                request.remote,
                refusal.status,
                n,
            )
    else:
        try:
            response = await handler(request)
        except web.HTTPException as e:
            kept = {k: v for k, v in e.headers.items() if k.lower() not in ("content-type", "content-length")}
            response = _error(e.status, e.text or e.reason, kept)
    admin.requests.labels(_route(request), str(response.status)).inc()
    return response


@web.middleware
async def worker_proxy(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With several workers: a mutation of a stream another worker owns is made by that
    worker (inside the guard: the request was allowed here; the owner checks it again)."""
    admin = _admin(request)
    name = request.match_info.get("name")
    if admin.workers is not None and name is not None and HOP_HEADER not in request.headers:
        if is_stream_name(name) and admin.hub.get(name) is None:
            owner = admin.workers.owner_of(name)
            if owner is not None:
                return await forward(request, owner, admin.workers)
    return await handler(request)


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not is_stream_name(name):
        raise web.HTTPBadRequest(text="not a valid stream name")
    return name


def _ok(body: dict[str, object]) -> web.Response:
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def streams(request: web.Request) -> web.StreamResponse:
    """Every stream of this server: with several workers, each worker's (asked on its own
    admin listener)."""
    admin = _admin(request)
    state = admin.origin
    body: list[object] = [api.stream_summary(state, name) for name in sorted(state.streams)]
    if admin.workers is not None and HOP_HEADER not in request.headers:
        body += await gather_lists(admin.workers, STREAM_LIST)
        body.sort(key=lambda item: str(item.get("name")) if isinstance(item, dict) else "")
    return stream_list_json(body)


async def metrics(request: web.Request) -> web.StreamResponse:
    return api.metrics_response(_admin(request).origin)


async def healthz(request: web.Request) -> web.StreamResponse:
    return api.health_response(_admin(request).origin)


def _kick(admin: AdminState, name: str, reason: str) -> None:
    stream = admin.hub.get(name)
    if stream is None:
        raise web.HTTPNotFound(text=f"no stream {name}")
    if not stream.publishing:
        raise web.HTTPConflict(text=f"stream {name} is not live")
    if not admin.hub.kick(name, reason):
        raise web.HTTPConflict(text=f"stream {name}'s ingest cannot be stopped (a raw RTP input)")


async def kick(request: web.Request) -> web.StreamResponse:
    admin, name = _admin(request), _name(request)
    _kick(admin, name, "kicked by the operator")
    log.warning("admin: stream %s kicked (from %s)", name, request.remote)
    return _ok({"stream": name, "kicked": True})


async def rotate_key(request: web.Request) -> web.StreamResponse:
    admin, name = _admin(request), _name(request)
    key = secrets.token_urlsafe(KEY_BYTES)
    admin.publish_keys()[name] = key
    kicked = admin.hub.kick(name, "publish key rotated")
    log.warning("admin: stream %s publish key rotated%s (from %s)", name, ", publisher kicked" * kicked, request.remote)
    return _ok({"stream": name, "key": key, "kicked": kicked})


async def revoke_key(request: web.Request) -> web.StreamResponse:
    admin, name = _admin(request), _name(request)
    admin.publish_keys()[name] = secrets.token_urlsafe(KEY_BYTES)  # known to nobody: the name is locked
    kicked = admin.hub.kick(name, "publish key revoked")
    log.warning("admin: stream %s publish key revoked%s (from %s)", name, ", publisher kicked" * kicked, request.remote)
    return _ok({"stream": name, "revoked": True, "kicked": kicked})


async def end(request: web.Request) -> web.StreamResponse:
    admin, name = _admin(request), _name(request)
    stream = admin.hub.get(name)
    if stream is None:
        raise web.HTTPNotFound(text=f"no stream {name}")
    if stream.ended:
        raise web.HTTPConflict(text=f"stream {name} has already ended")
    if stream.publishing and stream.stop_publisher is None:
        raise web.HTTPConflict(text=f"stream {name}'s ingest cannot be stopped (a raw RTP input)")
    was_live = stream.publishing
    if not admin.end_stream(name, "ended by the operator"):
        raise web.HTTPConflict(text=f"stream {name} could not be ended")
    log.warning("admin: stream %s ended (from %s)", name, request.remote)
    return _ok({"stream": name, "ended": True, "kicked": was_live})


def create_admin_app(admin: AdminState) -> web.Application:
    app = web.Application(middlewares=[guard, worker_proxy], client_max_size=MAX_BODY)
    app[ADMIN_KEY] = admin
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/streams", streams)
    app.router.add_post("/api/streams/{name}/kick", kick)
    app.router.add_post("/api/streams/{name}/key", rotate_key)
    app.router.add_delete("/api/streams/{name}/key", revoke_key)
    app.router.add_post("/api/streams/{name}/end", end)
    return app
