"""`[accounts]`: the plugin's settings, each with its default and the reason for it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mediacore.plugins.api import PluginError

from .passwords import DEFAULT_N, DEFAULT_P, DEFAULT_R, ScryptCost


@dataclass(slots=True)
class AccountsSettings:
    registration: bool = True
    """Whether anyone may register through `POST /api/users` (viewers only; hosts, moderators
    and admins are made with `python -m plugins.accounts.manage`). Off: 403."""
    guests: bool | None = None
    """Whether `POST /api/guest` issues guest viewer tokens. Unset: on when every listener is
    on loopback (a demo or a test), off otherwise."""
    token_ttl: float = 12 * 3600.0
    """Seconds a login's token is valid: a shopping session; the page logs in again after."""
    guest_ttl: float = 1800.0
    """Seconds a guest token is valid: short, guests are anonymous; the watch page fetches a
    new one when it expires."""
    scrypt_n: int = DEFAULT_N
    """scrypt CPU/memory cost (power of two; memory 128 * n * r bytes). Default 2^17, OWASP's."""
    scrypt_r: int = DEFAULT_R
    """scrypt block size."""
    scrypt_p: int = DEFAULT_P
    """scrypt parallelism."""
    login_attempts_per_address: int = 30
    """Login attempts one client address may make per `login_window`: a household or an
    office behind one NAT logs in a few times; a password-guessing script is stopped."""
    login_attempts_per_user: int = 5
    """Login attempts on one username per `login_window`, from any address: guessing one
    account's password from many addresses is stopped too."""
    login_window: float = 60.0
    """Seconds over which login attempts are counted (from the first of a key's window)."""
    registrations_per_address: int = 10
    """Accounts one address may register per `registration_window` (each costs a hash and a row)."""
    registration_window: float = 3600.0
    """Seconds over which registrations are counted."""
    guests_per_address: int = 60
    """Guest tokens one address may get per `login_window` (page reloads of a crowd behind one NAT)."""

    @property
    def cost(self) -> ScryptCost:
        return ScryptCost(self.scrypt_n, self.scrypt_r, self.scrypt_p)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> AccountsSettings:
        """The settings from `[accounts]`; PluginError for an unknown key or a bad value."""
        settings = cls()
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in values.items():
            if key not in fields:
                raise PluginError(f"accounts: unknown setting {key!r} (known: {', '.join(sorted(fields))})")
            default = getattr(settings, key)
            if key == "guests":
                ok = value is None or isinstance(value, bool)
            elif isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok:
                raise PluginError(f"accounts.{key}: {value!r} has the wrong type")
            setattr(settings, key, float(value) if isinstance(default, float) else value)
        try:
            settings.cost.check()
        except ValueError as e:
            raise PluginError(f"accounts: {e}") from e
        numbers = (
            settings.token_ttl,
            settings.guest_ttl,
            settings.login_window,
            settings.registration_window,
            settings.login_attempts_per_address,
            settings.login_attempts_per_user,
            settings.registrations_per_address,
            settings.guests_per_address,
        )
        if any(v <= 0 for v in numbers):
            raise PluginError("accounts: ttls, windows and attempt limits must be positive")
        return settings
