"""The HTTP publish hook: `POST [auth] publish_hook` with {stream, key, protocol, remote}.

A 2xx answer allows the publish; any other status refuses it, and so do a timeout and a
connection error (fail-closed). Log lines name the stream, the address and the hook's
scheme, host and path, never the key nor the hook URL's query (it may hold a token).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from mediacore.hub.publisher import PublishAttempt

log = logging.getLogger("mediacore.auth")


@dataclass(frozen=True, slots=True)
class HookAnswer:
    """What the hook said: `allowed`; `status` (0 when no answer came); `error` (why no
    answer came: a timeout or a connection error)."""

    allowed: bool
    status: int = 0
    error: str = ""


def shown_url(url: str) -> str:
    """The hook URL without its query, user info or fragment: what a log line may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class PublishHook:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.shown = shown_url(url)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def ask(self, attempt: PublishAttempt) -> HookAnswer:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        body = {"stream": attempt.stream, "key": attempt.key, "protocol": attempt.protocol, "remote": attempt.remote}
        try:
            async with self._session.post(self.url, json=body, allow_redirects=False) as resp:
                await resp.read()
                return HookAnswer(200 <= resp.status < 300, resp.status)
        except TimeoutError:
            error = f"no answer within {self.timeout.total:g} s"
        except aiohttp.ClientError as e:
            error = f"{type(e).__name__}: {e}"
        log.warning(
            "publish hook %s gave no answer for stream %s from %s: %s",
            self.shown,
            attempt.stream,
            attempt.remote,
            error.replace(self.url, self.shown),
        )
        return HookAnswer(False, 0, error)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await asyncio.sleep(0)  # let the connector's transports close
