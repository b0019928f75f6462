"""Password hashing with scrypt (hashlib, RFC 7914): memory-hard, so guessing on GPUs or
ASICs costs memory as well as time. Each user has a random salt; the cost parameters are
stored with the hash, so raising them later keeps old hashes verifiable."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SALT_BYTES = 16
"""Random bytes of salt per user (128 bits: no two users share one, precomputed tables are useless)."""
HASH_BYTES = 32
"""Bytes of derived key stored (256 bits)."""
SCHEME = "scrypt"
DEFAULT_N = 2**17
DEFAULT_R = 8
DEFAULT_P = 1


@dataclass(frozen=True, slots=True)
class ScryptCost:
    """scrypt's parameters.

    - `n`: CPU/memory cost, a power of two; memory is 128 * n * r bytes.
    - `r`: block size (8 is the value everyone uses; 1 KiB blocks).
    - `p`: parallelism (independent lanes; time grows with it, memory does not).

    The default is OWASP's recommendation for scrypt (N=2^17, r=8, p=1): 128 MiB and about a
    tenth to a half of a second of one core per hash."""

    n: int = DEFAULT_N
    r: int = DEFAULT_R
    p: int = DEFAULT_P

    @property
    def memory(self) -> int:
        """Bytes scrypt needs for these parameters."""
        return 128 * self.n * self.r

    def check(self) -> None:
        if self.n < 2**10 or self.n > 2**20 or self.n & (self.n - 1):
            raise ValueError("scrypt n must be a power of two between 2^10 and 2^20")
        if not 1 <= self.r <= 32 or not 1 <= self.p <= 16:
            raise ValueError("scrypt r must be 1..32 and p 1..16")


def _derive(password: str, salt: bytes, cost: ScryptCost) -> bytes:
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=cost.n,
        r=cost.r,
        p=cost.p,
        maxmem=cost.memory + 2**20,  # hashlib's default (32 MiB) is below the default cost
        dklen=HASH_BYTES,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str, cost: ScryptCost) -> str:
    """`scrypt$n$r$p$salt$hash` (salt and hash in base64), for the store. CPU-bound: run it
    in a worker thread."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _derive(password, salt, cost)
    return f"{SCHEME}${cost.n}${cost.r}${cost.p}${_b64(salt)}${_b64(digest)}"


def _parse(stored: str) -> tuple[ScryptCost, bytes, bytes]:
    scheme, n, r, p, salt, digest = stored.split("$")
    if scheme != SCHEME:
        raise ValueError(f"unknown password scheme {scheme!r}")
    return ScryptCost(int(n), int(r), int(p)), base64.b64decode(salt), base64.b64decode(digest)


def verify_password(password: str, stored: str | None, cost: ScryptCost) -> bool:
    """Whether `password` matches `stored`. For an unknown user (`stored` None) a hash with
    `cost` is still computed and the answer is False, so the time taken does not tell which
    usernames exist. The comparison is constant-time."""
    if stored is None:
        _derive(password, b"\0" * SALT_BYTES, cost)
        return False
    stored_cost, salt, digest = _parse(stored)
    return hmac.compare_digest(_derive(password, salt, stored_cost), digest)


def needs_rehash(stored: str, cost: ScryptCost) -> bool:
    """Whether `stored` was made with other parameters than `cost` (rehash on the next login)."""
    return _parse(stored)[0] != cost
