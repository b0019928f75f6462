"""Request collapsing: concurrent misses for one key share one upstream fetch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Collapser(Generic[T]):
    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[T]] = {}
        self.collapsed = 0  # requests that waited on someone else's fetch

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def run(self, key: str, fetch: Callable[[], Awaitable[T]]) -> T:
        future = self._inflight.get(key)
        if future is not None:
            self.collapsed += 1
            return await asyncio.shield(future)
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await fetch()
        except BaseException as e:
            if not future.done():
                future.set_exception(e)
                future.exception()  # retrieved here, so waiters alone see it
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[key]
