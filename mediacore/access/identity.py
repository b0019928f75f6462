"""Who is calling: a JWT (HS256) in `Authorization: Bearer`, signed with `[auth] jwt_secret`,
the secret the shop backend shares with the engine. The one rule for issuing and checking
them; plugins get a verified `Identity` and never parse tokens themselves. Time (seconds
since the epoch) is passed in.

Claims: `sub` (the user id), `role` (viewer, moderator, host or admin) and `exp`. The token
is size-checked before it is decoded, only HS256 is accepted (no `alg: none`, no key
confusion), and `exp` is required.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
MAX_TOKEN_BYTES = 4096
"""Longest bearer token read: a JWT with the claims above is a few hundred bytes; a larger one
is refused before it is decoded."""
MAX_SUBJECT = 128
"""Characters of a user id (`sub`): a UUID, an e-mail address or a shop's customer number."""
VERIFIED_TOKENS = 10_000
"""Tokens whose verification a `TokenCache` remembers (least recently used dropped first):
the callers of one node within a few minutes. A player posting events several times a minute
presents the same token each time, and decoding it (base64, JSON, HMAC) was a tenth of the
event route's time at 50,000 events/s."""
MIN_JWT_SECRET_BYTES = 32
"""Shortest `jwt_secret` accepted: RFC 7518 asks for a key at least as long as the hash (256 bits)."""


class Role(enum.IntEnum):
    """Ordered: a role may do what every lower role may."""

    VIEWER = 0
    MODERATOR = 1
    HOST = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: object) -> Role:
        if not isinstance(text, str) or text.upper() not in cls.__members__:
            raise IdentityError(f"unknown role {text!r}")
        return cls[text.upper()]

    @property
    def label(self) -> str:
        return self.name.lower()


class IdentityError(ValueError):
    """A token that proves nothing: the message says why (never the token itself)."""


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str
    role: Role
    expires_at: float

    def may(self, role: Role) -> bool:
        """Whether this identity acts with at least `role`."""
        return self.role >= role


def issue(secret: bytes, sub: str, role: Role, ttl: float, now: float) -> str:
    """A token for `sub` with `role`, valid `ttl` seconds from `now`."""
    if not sub or len(sub) > MAX_SUBJECT:
        raise IdentityError(f"a user id is 1 to {MAX_SUBJECT} characters")
    claims = {"sub": sub, "role": role.label, "exp": int(now + ttl), "iat": int(now)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: bytes, token: str, now: float) -> Identity:
    """The identity a token proves, or IdentityError."""
    if len(token) > MAX_TOKEN_BYTES:
        raise IdentityError("token too long")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "role", "exp"], "verify_exp": False},
        )
    except jwt.InvalidTokenError as e:
        raise IdentityError(f"invalid token: {type(e).__name__}") from None
    exp = claims["exp"]
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise IdentityError("invalid token: exp is not a number")
    if now >= exp:
        raise IdentityError("token expired")
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT:
        raise IdentityError("invalid token: bad sub")
    return Identity(sub, Role.parse(claims["role"]), float(exp))


class TokenCache:
    """`verify()` under one secret, remembering the identity of each valid token: a token
    seen again is checked against its `exp` only (its signature and claims cannot have
    changed). Refused tokens are not remembered. Bounded by VERIFIED_TOKENS."""

    def __init__(self, secret: bytes, capacity: int = VERIFIED_TOKENS) -> None:
        self._secret = secret
        self._capacity = capacity
        self._known: OrderedDict[str, Identity] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def verify(self, token: str, now: float) -> Identity:
        """The identity `token` proves at `now`, or IdentityError (as `verify`)."""
        who = self._known.get(token)
        if who is None:
            who = verify(self._secret, token, now)
            self._known[token] = who
            if len(self._known) > self._capacity:
                self._known.popitem(last=False)
            return who
        if now >= who.expires_at:
            del self._known[token]
            raise IdentityError("token expired")
        self._known.move_to_end(token)
        return who


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
