"""Coalescing concurrent calls into batches, per key.

Many activities run at once in a worker process. When each would make the
same kind of call (write to the sink, report to a tenant), a ``Coalescer``
gathers what arrives within a short window and makes one call for all of it,
with at most one call in flight per key. Every caller still waits for the call
that carries its items and sees its outcome, so an activity completes only
once its own items are durable, and a failure fails (and retries) each
activity whose items it carried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Coalescer(Generic[K, T]):
    """Batches items per key into calls of ``send(key, items)``.

    Args:
        send: makes one call for a batch; its exception reaches every caller
            whose items were in the batch.
        window_s: how long a batch waits for more items after the first.
        max_items: a batch is sent at once when it has this many items.
    """

    def __init__(
        self,
        send: Callable[[K, list[T]], Awaitable[object]],
        *,
        window_s: float = 0.02,
        max_items: int = 1000,
    ) -> None:
        self._send = send
        self._window_s = window_s
        self._max_items = max_items
        self._pending: dict[K, list[tuple[Sequence[T], asyncio.Future[None]]]] = {}
        self._flushers: dict[K, asyncio.Task[None]] = {}

    async def submit(self, key: K, items: Sequence[T]) -> None:
        """Send ``items`` with whatever else is pending for ``key``; returns
        once the call that carried them succeeded, raises if it failed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append((items, future))
        if key not in self._flushers:
            self._flushers[key] = asyncio.create_task(self._flush(key))
        await future

    def _count(self, key: K) -> int:
        return sum(len(items) for items, _ in self._pending.get(key, ()))

    async def _flush(self, key: K) -> None:
        try:
            while self._pending.get(key):
                # Give concurrent callers a moment to join this batch.
                waited = 0.0
                while waited < self._window_s and self._count(key) < self._max_items:
                    await asyncio.sleep(self._window_s / 4)
                    waited += self._window_s / 4
                batch = self._pending.pop(key)
                items = [item for chunk, _ in batch for item in chunk]
                try:
                    await self._send(key, items)
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            del self._flushers[key]
