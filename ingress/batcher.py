"""The ingress's per-shard micro-batcher."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from actors.rules.proxy import IngestAck, IngestBatch
from wire import Event, Rejection


class Unavailable(Exception):
    """The ingress cannot take this item now (closing, or a shard's queue is
    full); the request gets 503."""


@dataclass
class _Queued:
    item: Event | Rejection
    size: int
    future: asyncio.Future[IngestAck]


@dataclass
class _ShardQueue:
    items: list[_Queued] = field(default_factory=list)
    size: int = 0
    due: bool = False
    timer: asyncio.TimerHandle | None = None
    in_flight: int = 0


class ShardBatcher:
    """Gathers items per shard into ``send(shard, batch)`` calls.

    A shard's batch goes out ``window_s`` after its first item, or at once when
    it holds ``max_items`` items or ``max_bytes`` bytes, with at most
    ``in_flight`` calls per shard at a time; items that arrive while every
    slot is busy wait and go out together. Each ``submit`` returns a future
    for the call that carried the item: its ack, or its exception.

    An item whose future was cancelled before its batch went out (its request
    already got 503) is dropped rather than sent.
    """

    def __init__(
        self,
        send: Callable[[int, IngestBatch], Awaitable[IngestAck]],
        *,
        shards: int,
        window_s: float,
        max_items: int,
        max_bytes: int,
        in_flight: int,
        max_queued: int,
    ) -> None:
        self._send = send
        self._window_s = window_s
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._in_flight = in_flight
        self._max_queued = max_queued
        self._queues = [_ShardQueue() for _ in range(shards)]
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def queued(self, shard: int) -> int:
        return len(self._queues[shard].items)

    @property
    def closing(self) -> bool:
        return self._closing

    def submit(
        self, shard: int, item: Event | Rejection, size: int
    ) -> asyncio.Future[IngestAck]:
        """Queue ``item`` (``size`` bytes) for ``shard``.

        Raises:
            Unavailable: the batcher is closing or the shard's queue is full.
        """
        if self._closing:
            raise Unavailable("shutting down")
        queue = self._queues[shard]
        if len(queue.items) >= self._max_queued:
            raise Unavailable(f"shard {shard} has {len(queue.items)} items queued")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestAck] = loop.create_future()
        queue.items.append(_Queued(item, size, future))
        queue.size += size
        if len(queue.items) >= self._max_items or queue.size >= self._max_bytes:
            queue.due = True
            self._pump(shard)
        elif not queue.due and queue.timer is None:
            queue.timer = loop.call_later(self._window_s, self._on_window, shard)
        return future

    async def close(self) -> None:
        """Take no more items; send everything queued and wait for it."""
        self._closing = True
        for shard in range(len(self._queues)):
            self._pump(shard)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _on_window(self, shard: int) -> None:
        queue = self._queues[shard]
        queue.timer = None
        queue.due = True
        self._pump(shard)

    def _pump(self, shard: int) -> None:
        queue = self._queues[shard]
        while (
            queue.items
            and queue.in_flight < self._in_flight
            and (queue.due or self._closing)
        ):
            batch = self._cut(queue)
            if not batch:
                continue
            queue.in_flight += 1
            task = asyncio.create_task(self._run(shard, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not queue.items:
            # Whatever comes next starts a fresh window.
            queue.due = False
            if queue.timer is not None:
                queue.timer.cancel()
                queue.timer = None
        # Items left behind have waited a window already: they stay due.

    def _cut(self, queue: _ShardQueue) -> list[_Queued]:
        batch: list[_Queued] = []
        size = taken = 0
        for entry in queue.items:
            if batch and (
                len(batch) >= self._max_items or size + entry.size > self._max_bytes
            ):
                break
            taken += 1
            queue.size -= entry.size
            if entry.future.done():  # abandoned: its sender was told 503
                continue
            batch.append(entry)
            size += entry.size
        del queue.items[:taken]
        return batch

    async def _run(self, shard: int, batch: list[_Queued]) -> None:
        ingest = IngestBatch(
            events=[e.item for e in batch if not isinstance(e.item, Rejection)],
            rejections=[e.item for e in batch if isinstance(e.item, Rejection)],
        )
        try:
            ack = await self._send(shard, ingest)
        except Exception as exc:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
        else:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_result(ack)
        finally:
            self._queues[shard].in_flight -= 1
            self._pump(shard)
