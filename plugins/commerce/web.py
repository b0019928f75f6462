"""What every commerce route shares: JSON errors, who the caller is, and reading a bounded
JSON body. A route answers bad input with a clear 4xx before it touches the store."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiohttp import web

from mediacore.plugins.api import Handler, Identity, IdentityError, PluginContext, Role

from .model import AlreadyExists, CommerceError, InvalidRequest, UnknownProduct, UnknownSale

log = logging.getLogger("mediacore.commerce")


class HttpError(Exception):
    """Ends a request with `status` and `{"error": code, "detail": detail}`."""

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


def error(status: int, code: str, detail: str = "") -> web.Response:
    return HttpError(status, code, detail).response()


def caller(context: PluginContext, request: web.Request, role: Role) -> Identity:
    """The verified caller, at least `role`: 401 without a valid token, 403 below the role."""
    try:
        who = context.identity(request)
    except IdentityError as e:
        raise HttpError(401, "unauthorized", str(e), {"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
    if who is None:
        raise HttpError(401, "unauthorized", "a bearer token is required", {"WWW-Authenticate": "Bearer"})
    if not who.may(role):
        raise HttpError(403, "forbidden", f"this call needs the {role.label} role")
    return who


async def json_body(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The request's JSON object, at most `max_bytes` (413 beyond; the origin itself refuses
    bodies over its own cap), else 400."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise HttpError(413, "too_large", f"the body may be at most {max_bytes} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise HttpError(413, "too_large", f"the body may be at most {max_bytes} bytes") from None
    if len(raw) > max_bytes:
        raise HttpError(413, "too_large", f"the body may be at most {max_bytes} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "bad_request", "the body must be JSON") from None
    if not isinstance(data, dict):
        raise HttpError(400, "bad_request", "the body must be a JSON object")
    return data


def only(data: dict[str, Any], allowed: Collection[str], required: Collection[str] = ()) -> dict[str, Any]:
    """`data` if it has every required field and no other than the allowed ones (a typo in a
    field name is an error, not a silently ignored option)."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise HttpError(400, "bad_request", f"unknown field {unknown[0]!r}")
    missing = sorted(set(required) - set(data))
    if missing:
        raise HttpError(400, "bad_request", f"missing field {missing[0]!r}")
    return data


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "bad_request", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise HttpError(400, "bad_request", f"{name} must be between {low} and {high}")
    return value


def store_errors(e: CommerceError) -> HttpError:
    """The store's errors as HTTP: nothing was written for any of them."""
    if isinstance(e, InvalidRequest):
        return HttpError(400, "bad_request", str(e))
    if isinstance(e, UnknownProduct):
        return HttpError(404, "unknown_product", str(e))
    if isinstance(e, UnknownSale):
        return HttpError(404, "unknown_sale", str(e))
    if isinstance(e, AlreadyExists):
        return HttpError(409, "exists", str(e))
    return HttpError(400, "bad_request", str(e))


def guarded(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Handler:
    """HttpError → its response; a store error → its 4xx; any other failure (the store is
    unreachable) → 503, logged."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except HttpError as e:
            return e.response()
        except CommerceError as e:
            return store_errors(e).response()
        except web.HTTPException:
            raise
        except Exception:
            log.exception("commerce: %s %s failed", request.method, request.path)
            return HttpError(503, "unavailable", "the shop's store did not answer; retry").response()

    wrapper.__name__ = getattr(handler, "__name__", "handler")
    return wrapper
