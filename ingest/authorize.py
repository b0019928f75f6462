"""Asking the Authorizer about a publish attempt, the one way both ingest servers do it:
fail closed, so an authorizer that breaks admits nobody."""

from __future__ import annotations

import logging

from mediacore.hub.publisher import Authorizer, PublishAttempt

log = logging.getLogger("mediacore.ingest")

AUTHORIZATION_FAILED = "publish authorization failed"


async def decide(authorize: Authorizer, attempt: PublishAttempt, peer: str) -> str | None:
    """The refusal's text, or None to allow; an authorizer that raises refuses (logged)."""
    try:
        return await authorize(attempt)
    except Exception as e:
        log.error("%s %s [%s]: publish authorization failed: %r", attempt.protocol, peer, attempt.stream, e, exc_info=e)
        return AUTHORIZATION_FAILED
