"""The optional review hook (`[chat] review_hook = URL`): each chat message that passed the
local checks is POSTed as JSON {room, user, text}; the answer decides:

    {"action": "allow"}                  publish as is
    {"action": "deny", "reason"?: str}   refuse (`error {code: "denied"}`)
    {"action": "replace", "text": str}   publish this text instead

No answer within `review_timeout`, a non-2xx status or an answer that is none of these:
`review_fallback` ("allow" or "deny") decides, and the miss is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp

log = logging.getLogger("plugins.chat")


@dataclass(slots=True, frozen=True)
class Review:
    allowed: bool
    text: str
    fallback: bool = False
    """The hook did not answer usefully; the fallback decided."""


def decide(answer: object, text: str) -> Review | None:
    """The review an answer body gives, or None when it is not a valid answer."""
    if not isinstance(answer, dict):
        return None
    action = answer.get("action")
    if action == "allow":
        return Review(True, text)
    if action == "deny":
        return Review(False, text)
    if action == "replace" and isinstance(answer.get("text"), str) and answer["text"].strip():
        return Review(True, answer["text"])
    return None


class ReviewHook:
    def __init__(self, url: str, timeout: float, fallback_allows: bool) -> None:
        self.url = url
        self.timeout = timeout
        self.fallback_allows = fallback_allows
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def review(self, room: str, user: str, text: str) -> Review:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session.post(self.url, json={"room": room, "user": user, "text": text}) as r:
                    answer = await r.json(content_type=None) if r.status // 100 == 2 else None
        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
            log.warning("chat: review hook %s did not answer (%r); fallback decides", self.url, e)
            return Review(self.fallback_allows, text, fallback=True)
        review = decide(answer, text)
        if review is None:
            log.warning("chat: review hook %s gave no valid answer; fallback decides", self.url)
            return Review(self.fallback_allows, text, fallback=True)
        return review
