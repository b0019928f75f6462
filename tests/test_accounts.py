"""The embedded accounts plugin against a running engine over HTTP: register, log in (the
token is one the engine verifies), wrong password, duplicate names, a login flood stopped
per address and per username with Retry-After, token expiry on an injected clock, guest
tokens on loopback only unless configured, and bad input (nothing written)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from mediacore.access.identity import IdentityError, Role, verify
from mediacore.app.config import Config, load_config
from mediacore.app.engine import Engine
from plugins.accounts import limits
from plugins.accounts.limits import WindowLimiter
from plugins.accounts.passwords import ScryptCost, hash_password, needs_rehash, verify_password
from plugins.accounts.plugin import AccountsPlugin
from plugins.accounts.settings import AccountsSettings

SECRET = "a-shared-secret-of-at-least-32-bytes!!"
CHEAP = {"scrypt_n": 2**12}  # tests hash hundreds of times; the default cost is tested once below


@dataclass
class Server:
    engine: Engine
    http: aiohttp.ClientSession
    skew: list[float]
    """Seconds added to the engine's wall clock (token expiry without waiting)."""
    plugin: AccountsPlugin


def server_factory(config: Config) -> Callable[..., AsyncIterator[Server]]:
    async def make(**settings: object) -> AsyncIterator[Server]:
        config.auth.jwt_secret = SECRET
        config.plugin_settings["accounts"] = {**CHEAP, **settings}
        skew = [0.0]
        engine = Engine(config, wall_clock=lambda: time.time() + skew[0])
        plugin = AccountsPlugin()
        engine.plugins = [plugin]
        await engine.start()
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}") as http:
                yield Server(engine, http, skew, plugin)
        finally:
            await engine.stop()

    return make


@pytest.fixture
async def server(config: Config) -> AsyncIterator[Server]:
    async for s in server_factory(config)():
        yield s


async def post(http: aiohttp.ClientSession, path: str, body: object = None, **kw: object) -> tuple[int, dict, dict]:
    async with http.post(path, json=body, **kw) as r:
        data = await r.json() if r.content_type == "application/json" else {}
        return r.status, data, dict(r.headers)


async def test_register_login_and_the_token_is_one_the_engine_accepts(server: Server):
    status, body, _ = await post(server.http, "/api/users", {"username": "alice", "password": "correct horse"})
    assert status == 201 and body == {"username": "alice", "role": "viewer"}
    status, body, _ = await post(server.http, "/api/login", {"username": "alice", "password": "correct horse"})
    assert status == 200 and body["role"] == "viewer" and body["expires_in"] == 43200
    who = verify(SECRET.encode(), body["token"], time.time())
    assert (who.sub, who.role) == ("alice", Role.VIEWER)
    assert who.expires_at - time.time() == pytest.approx(43200, abs=2)
    # Case-insensitive lookup; the token names the account as registered.
    status, body, _ = await post(server.http, "/api/login", {"username": "ALICE", "password": "correct horse"})
    assert status == 200 and verify(SECRET.encode(), body["token"], time.time()).sub == "alice"


async def test_wrong_password_and_unknown_user_get_the_same_401(server: Server):
    await post(server.http, "/api/users", {"username": "bob", "password": "s3cret-pass"})
    wrong = await post(server.http, "/api/login", {"username": "bob", "password": "not-the-pass"})
    unknown = await post(server.http, "/api/login", {"username": "nobody", "password": "not-the-pass"})
    assert wrong[:2] == unknown[:2] == (401, {"error": "invalid_credentials", "detail": "wrong username or password"})


async def test_duplicate_username_is_409_regardless_of_case(server: Server):
    assert (await post(server.http, "/api/users", {"username": "carol", "password": "password1"}))[0] == 201
    for name in ("carol", "Carol"):
        status, body, _ = await post(server.http, "/api/users", {"username": name, "password": "password2"})
        assert status == 409 and body["error"] == "exists"
    # The first password still logs in: nothing was overwritten.
    assert (await post(server.http, "/api/login", {"username": "carol", "password": "password1"}))[0] == 200


async def test_login_flood_is_rate_limited_per_username_and_per_address(server: Server):
    await post(server.http, "/api/users", {"username": "dave", "password": "the-real-one"})
    per_user = AccountsSettings().login_attempts_per_user
    statuses = [
        (await post(server.http, "/api/login", {"username": "dave", "password": f"guess-{i:04d}"}))[0]
        for i in range(per_user + 3)
    ]
    assert statuses == [401] * per_user + [429] * 3
    status, body, headers = await post(server.http, "/api/login", {"username": "dave", "password": "the-real-one"})
    assert status == 429 and body["error"] == "rate_limited"  # even the right password waits
    assert 1 <= int(headers["Retry-After"]) <= 60
    # Per address: guessing across many usernames from one address stops too.
    per_address = AccountsSettings().login_attempts_per_address
    flood = await asyncio.gather(
        *(
            post(server.http, "/api/login", {"username": f"user{i}", "password": "whatever1"})
            for i in range(per_address + 10)
        )
    )
    counted = [s for s, _, _ in flood]
    # The address already made per_user counted attempts above (refused ones do not count).
    allowed = per_address - per_user
    assert counted.count(401) == allowed and counted.count(429) == len(flood) - allowed
    # After the window the user may log in again (the limiter's own clock, injected).
    now = server.plugin.context.clock()
    assert server.plugin.by_user.blocked_for("dave", now + 61) == 0


async def test_token_expiry(config: Config):
    async for server in server_factory(config)(token_ttl=30.0):
        await post(server.http, "/api/users", {"username": "erin", "password": "password!"})
        _, body, _ = await post(server.http, "/api/login", {"username": "erin", "password": "password!"})
        token = body["token"]
        now = time.time()
        assert verify(SECRET.encode(), token, now + 29).sub == "erin"
        with pytest.raises(IdentityError):
            verify(SECRET.encode(), token, now + 31)
        # The engine refuses it once its clock passes exp: a plugin route answering with
        # context.identity() sees an IdentityError. Checked through the plugin's context.
        server.skew[0] = 31.0

        class FakeRequest:
            headers = {"Authorization": f"Bearer {token}"}

        with pytest.raises(IdentityError):
            server.plugin.context.identity(FakeRequest())  # type: ignore[arg-type]
        server.skew[0] = 0.0
        assert server.plugin.context.identity(FakeRequest()).sub == "erin"  # type: ignore[arg-type]


async def test_guest_tokens_on_loopback_by_default(server: Server):
    status, body, _ = await post(server.http, "/api/guest")
    assert status == 200 and body["sub"].startswith(limits.GUEST_SUB_PREFIX)
    who = verify(SECRET.encode(), body["token"], time.time())
    assert who.role == Role.VIEWER and who.expires_at - time.time() == pytest.approx(1800, abs=2)
    other = (await post(server.http, "/api/guest"))[1]
    assert other["sub"] != body["sub"]


async def test_guest_tokens_off_when_configured_off(config: Config):
    async for server in server_factory(config)(guests=False):
        status, body, _ = await post(server.http, "/api/guest")
        assert status == 403 and body["error"] == "guests_disabled"


async def test_guest_tokens_off_beyond_loopback_unless_configured(tmp_path):
    from conftest import local_config

    def cfg(**settings: object) -> Config:
        return local_config(
            {"host": "0.0.0.0", "data_dir": str(tmp_path / "data")},
            admin={"port": 0},
            auth={"jwt_secret": SECRET, "allow_open_publish": True},
            accounts={**CHEAP, **settings},
        )

    for settings, expected in (({}, 403), ({"guests": True}, 200)):
        engine = Engine(cfg(**settings))
        await engine.start()
        try:
            async with aiohttp.ClientSession() as http:
                status, _, _ = await post(http, f"http://127.0.0.1:{engine.http_port}/api/guest")
                assert status == expected, settings
        finally:
            await engine.stop()


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "bad_json"),
        (b"[1, 2]", 400, "bad_json"),
        (b'{"username": "ok-name"}', 400, "bad_password"),
        (b'{"username": 7, "password": "password1"}', 400, "bad_username"),
        (b'{"username": "a b c", "password": "password1"}', 400, "bad_username"),
        (b'{"username": "ab", "password": "password1"}', 400, "bad_username"),
        (b'{"username": "' + b"u" * 33 + b'", "password": "password1"}', 400, "bad_username"),
        (b'{"username": "okname", "password": "short"}', 400, "bad_password"),
        (b'{"username": "okname", "password": "' + b"p" * 257 + b'"}', 400, "bad_password"),
        (b'{"username": "okname", "password": "' + b"p" * 5000 + b'"}', 413, "too_large"),
        (b"\xff\xfe", 400, "bad_json"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_written(server: Server, body: bytes, status: int, error: str):
    for path in ("/api/users", "/api/login"):
        async with server.http.post(path, data=body, headers={"Content-Type": "application/json"}) as r:
            assert r.status == status, (path, await r.text())
            assert (await r.json())["error"] == error
    assert await server.plugin.store.get("okname") is None


async def test_a_megabyte_body_without_length_is_refused(server: Server):
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(16):
            yield b"x" * 65536

    async with server.http.post("/api/users", data=chunks()) as r:
        assert r.status == 413


async def test_registration_closed(config: Config):
    async for server in server_factory(config)(registration=False):
        status, body, _ = await post(server.http, "/api/users", {"username": "frank", "password": "password1"})
        assert status == 403 and body["error"] == "registration_closed"


async def test_default_cost_hash_verifies_and_old_hashes_are_upgraded():
    default = ScryptCost()
    assert default.memory == 128 * 2**20
    stored = await asyncio.to_thread(hash_password, "pass phrase", default)
    assert stored.startswith("scrypt$131072$8$1$")
    assert await asyncio.to_thread(verify_password, "pass phrase", stored, default)
    assert not await asyncio.to_thread(verify_password, "pass phrasf", stored, default)
    cheap = hash_password("pass phrase", ScryptCost(2**10))
    assert verify_password("pass phrase", cheap, default) and needs_rehash(cheap, default)
    assert hash_password("pass phrase", default) != stored  # per-user salt


def test_window_limiter_counts_per_key_and_forgets_the_oldest():
    limiter = WindowLimiter(2, 10.0, max_keys=3)
    assert [limiter.hit("a", 0.0) for _ in range(3)] == [0, 0, 10]
    assert limiter.hit("a", 9.5) == 1 and limiter.hit("a", 10.0) == 0
    for key in "bcde":
        limiter.hit(key, 11.0)
    assert len(limiter) == 3


def test_settings_are_checked():
    from mediacore.plugins.api import PluginError

    with pytest.raises(PluginError, match="unknown setting"):
        AccountsSettings.from_mapping({"nope": 1})
    with pytest.raises(PluginError, match="wrong type"):
        AccountsSettings.from_mapping({"guests": "yes"})
    with pytest.raises(PluginError, match="power of two"):
        AccountsSettings.from_mapping({"scrypt_n": 1000})
    assert AccountsSettings.from_mapping({"token_ttl": 60}).token_ttl == 60.0


def test_the_default_configuration_runs_the_accounts_plugin():
    assert load_config(None).plugins.enabled == ["accounts", "commerce", "chat"]


def test_manage_creates_a_host(tmp_path, monkeypatch):
    import io

    from plugins.accounts import manage
    from plugins.accounts.store import UserStore

    monkeypatch.setattr("sys.stdin", io.StringIO("host-password\n"))
    assert manage.main(["--data-dir", str(tmp_path), "add", "hosty", "--role", "host"]) == 0
    store = UserStore(tmp_path / "accounts" / "accounts.sqlite")
    user = store.get("hosty")
    assert user is not None and user.role == Role.HOST
    assert verify_password("host-password", user.password, ScryptCost())
    store.close()
