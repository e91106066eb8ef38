"""A small bounded TTL cache for review answers (TokenReview, SubjectAccessReview).

The apiserver caches both for about ten seconds so that a busy client (the HPA every 15 s, the
aggregator every few seconds) costs kube-apiserver one review per window, not one per request.
Bounded (least recently used entries go first) so a flood of distinct tokens cannot grow memory.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["SingleFlight", "TTLCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("a cache needs room for at least one entry")
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            return
        self._entries[key] = (self._clock() + ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class SingleFlight(Generic[K, V]):
    """Concurrent lookups of one key share one call: a burst of cache misses costs one review.

    The call runs as its own task, so a caller that gives up (its request was cancelled) does not
    cancel the review for the others waiting on it.
    """

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        task = self._inflight.get(key)
        if task is None:

            async def wrapped() -> V:
                return await call()

            task = asyncio.create_task(wrapped())
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: nobody may be left to await it
