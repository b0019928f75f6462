"""What every commerce route shares: JSON errors (`HttpError`, from the plugin API), who the
caller is, and checking the fields of a JSON body (read with the API's `read_json_object`).
A route answers bad input with a clear 4xx before it touches the store."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiohttp import web

from mediacore.plugins.api import Handler, HttpError, Identity, IdentityError, PluginContext, Role

from .model import AlreadyExists, CommerceError, InvalidRequest, UnknownProduct, UnknownSale

log = logging.getLogger("mediacore.commerce")


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
