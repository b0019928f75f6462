"""The accounts plugin's HTTP routes: register, log in, get a guest token.

Every request is checked in this order, so a refused one costs nothing: body size, JSON
shape and lengths, the rate limits (before any hash is computed), then the store and the
hash. Bodies: `{"error": code, "detail"?}` on every failure."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from mediacore.plugins.api import HttpError, PluginContext, Role, read_json_object

from . import limits
from .limits import WindowLimiter
from .passwords import hash_password, needs_rehash, verify_password
from .settings import AccountsSettings
from .store import AsyncUserStore, UserExists

log = logging.getLogger("plugins.accounts")

USERNAME = re.compile(rf"[A-Za-z0-9_.-]{{{limits.MIN_USERNAME},{limits.MAX_USERNAME}}}")


class BadRequest(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def _error(status: int, error: str, detail: str | None = None, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if detail:
        body["detail"] = detail
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return web.json_response(body, status=status, headers=headers)


async def read_credentials(request: web.Request) -> tuple[str, str]:
    """`username` and `password` from a JSON body, checked against the bounds."""
    try:
        body = await read_json_object(request, limits.MAX_BODY)
    except HttpError as e:  # this API's code for a body that is not a JSON object is bad_json
        raise BadRequest(e.status, "bad_json" if e.status == 400 else e.code, e.detail) from None
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise BadRequest(
            400,
            "bad_username",
            f"a username is {limits.MIN_USERNAME} to {limits.MAX_USERNAME} letters, digits, '_', '.' or '-'",
        )
    if not isinstance(password, str) or not limits.MIN_PASSWORD <= len(password) <= limits.MAX_PASSWORD:
        raise BadRequest(
            400, "bad_password", f"a password is {limits.MIN_PASSWORD} to {limits.MAX_PASSWORD} characters"
        )
    return username, password


class AccountsPlugin:
    name = "accounts"

    def __init__(self) -> None:
        self._context: PluginContext | None = None
        self._store: AsyncUserStore | None = None
        self.settings = AccountsSettings()
        self._hashing = asyncio.Semaphore(limits.MAX_CONCURRENT_HASHES)

    async def start(self, context: PluginContext) -> None:
        self._context = context
        self.settings = AccountsSettings.from_mapping(context.settings)
        s = self.settings
        self.guests = s.guests if s.guests is not None else context.loopback_only
        self.by_address = WindowLimiter(s.login_attempts_per_address, s.login_window)
        self.by_user = WindowLimiter(s.login_attempts_per_user, s.login_window)
        self.registrations = WindowLimiter(s.registrations_per_address, s.registration_window)
        self.guest_limiter = WindowLimiter(s.guests_per_address, s.login_window)
        self.logins = Counter(
            "accounts_logins", "Login attempts by result (ok, invalid, limited)", ["result"], registry=context.registry
        )
        self.registered = Counter("accounts_registrations", "Accounts registered", registry=context.registry)
        self.guest_tokens = Counter("accounts_guest_tokens", "Guest tokens issued", registry=context.registry)
        self._store = AsyncUserStore(context.data_dir / "accounts.sqlite")
        await self._store.open()
        context.add_route("POST", "/api/users", self.register)
        context.add_route("POST", "/api/login", self.login)
        context.add_route("POST", "/api/guest", self.guest)
        log.info("accounts: registration %s, guests %s", "open" if s.registration else "closed", self.guests)

    async def stop(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    @property
    def context(self) -> PluginContext:
        assert self._context is not None, "not started"
        return self._context

    @property
    def store(self) -> AsyncUserStore:
        assert self._store is not None, "not started"
        return self._store

    async def _hash(self, password: str) -> str:
        async with self._hashing:
            return await asyncio.to_thread(hash_password, password, self.settings.cost)

    async def _verify(self, password: str, stored: str | None) -> bool:
        async with self._hashing:
            return await asyncio.to_thread(verify_password, password, stored, self.settings.cost)

    async def register(self, request: web.Request) -> web.StreamResponse:
        if not self.settings.registration:
            return _error(403, "registration_closed")
        try:
            username, password = await read_credentials(request)
        except BadRequest as e:
            return _error(e.status, e.error, e.detail)
        wait = self.registrations.hit(self.context.client_key(request), self.context.clock())
        if wait:
            return _error(429, "rate_limited", "too many registrations from this address", retry_after=wait)
        if await self.store.get(username) is not None:
            return _error(409, "exists", "that username is taken")
        password_hash = await self._hash(password)
        try:
            await self.store.add(username, password_hash, Role.VIEWER, self.context.wall_clock())
        except UserExists:
            return _error(409, "exists", "that username is taken")
        self.registered.inc()
        return web.json_response({"username": username, "role": Role.VIEWER.label}, status=201)

    async def login(self, request: web.Request) -> web.StreamResponse:
        try:
            username, password = await read_credentials(request)
        except BadRequest as e:
            return _error(e.status, e.error, e.detail)
        now = self.context.clock()
        address = self.context.client_key(request)
        user_key = username.lower()
        # Both limits are checked before either counts, so a refused attempt does not use up
        # the other's allowance; then both count.
        wait = max(self.by_address.blocked_for(address, now), self.by_user.blocked_for(user_key, now))
        if not wait:
            wait = max(self.by_address.hit(address, now), self.by_user.hit(user_key, now))
        if wait:
            self.logins.labels("limited").inc()
            return _error(429, "rate_limited", "too many login attempts; try again later", retry_after=wait)
        user = await self.store.get(username)
        if not await self._verify(password, user.password if user else None) or user is None:
            self.logins.labels("invalid").inc()
            return _error(401, "invalid_credentials", "wrong username or password")
        if needs_rehash(user.password, self.settings.cost):
            await self.store.set_password(user.username, await self._hash(password))
        self.logins.labels("ok").inc()
        ttl = self.settings.token_ttl
        token = self.context.issue_token(user.username, user.role, ttl)
        return web.json_response(
            {"token": token, "username": user.username, "role": user.role.label, "expires_in": ttl}
        )

    async def guest(self, request: web.Request) -> web.StreamResponse:
        if not self.guests:
            return _error(403, "guests_disabled", "guest tokens are off on this server ([accounts] guests)")
        wait = self.guest_limiter.hit(self.context.client_key(request), self.context.clock())
        if wait:
            return _error(429, "rate_limited", "too many guest tokens from this address", retry_after=wait)
        sub = limits.GUEST_SUB_PREFIX + secrets.token_hex(8)
        ttl = self.settings.guest_ttl
        self.guest_tokens.inc()
        token = self.context.issue_token(sub, Role.VIEWER, ttl)
        return web.json_response({"token": token, "sub": sub, "role": Role.VIEWER.label, "expires_in": ttl})
