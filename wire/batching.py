"""One micro-batcher for every place that turns many small calls into few.

Three kinds of caller share it: the batching ``EventSender`` (one ``ingest``
update per shard and batch), the HTTP ingress (requests of one event each,
gathered into one update per shard) and the activities (concurrent activities
share sink writes and tenant reports). Each needs the same things: a batch per
key that goes out a short window after its first item, or at once when it is
full; a bounded number of calls in flight per key, with what arrives
meanwhile gathering into the next, larger batch; a bounded queue; and every
submitter told the outcome of the call that carried its items, so that a
caller completes only once its own items are through, and a failure reaches
each caller whose items it carried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")

_UNBOUNDED = float("inf")


class Refused(Exception):
    """The batcher cannot take a submission now."""


class QueueFull(Refused):
    """The key's queue is at its cap (``max_queued`` or ``max_queued_bytes``)."""


class Closed(Refused):
    """The batcher is closing or closed."""


class _Chunk:
    """Items submitted together, never split across calls."""

    __slots__ = ("count", "future", "items", "size")

    def __init__(
        self, items: list[Any], size: int, future: asyncio.Future[Any] | None
    ) -> None:
        self.items = items
        self.count = len(items)
        self.size = size
        self.future = future  # None: an open chunk, filled by ``add``


@dataclass(eq=False)
class _Queue:
    chunks: list[_Chunk] = field(default_factory=list)
    # The last chunk, while ``add`` may still append to it.
    open: _Chunk | None = None
    count: int = 0  # items queued, not yet cut into a batch
    size: int = 0  # their bytes
    # The window has passed (or a flush asked): whatever is queued goes as
    # soon as a slot is free, without waiting again.
    due: bool = False
    timer: asyncio.TimerHandle | None = None
    in_flight: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class MicroBatcher(Generic[K, T, R]):
    """Gathers items per key into calls of ``send(key, items)``.

    A key's batch goes out ``window_s`` after its first item, or at once when
    it holds ``max_items`` items or ``max_bytes`` bytes, with at most
    ``in_flight`` calls per key at a time. Items that arrive while every slot
    is busy wait and go out together, so batches grow with the load by
    themselves.

    Items come in chunks, and a chunk is never split: a batch is cut between
    chunks, and a chunk larger than a cap goes alone. ``submit`` queues a
    chunk and returns a future for the call that carries it: the call's
    result, or its exception. A chunk whose future was cancelled before its
    batch went out (its submitter gave up) is dropped rather than sent.
    ``add`` appends one item to the key's open chunk, which has no future:
    for a producer whose ``send`` handles every outcome itself, at the cost
    of a list append per item.

    Args:
        send: makes one call for a batch; its result or exception reaches
            every chunk in the batch.
        window_s: how long a key's batch waits for company after its first
            item.
        max_items: a batch is sent at once when it holds this many items, and
            holds no more (unless one chunk alone has more).
        max_bytes: ...or this many bytes, as the submitters counted them;
            None: no byte limit.
        in_flight: calls in flight per key.
        max_queued: items waiting per key (not yet sent) past which ``submit``
            and ``add`` raise ``QueueFull``; ``wait_for_room`` waits until
            the key is under it again. None: no cap.
        max_queued_bytes: the same cap in bytes; None: no cap.
    """

    def __init__(
        self,
        send: Callable[[K, list[T]], Awaitable[R]],
        *,
        window_s: float,
        max_items: int,
        max_bytes: int | None = None,
        in_flight: int = 1,
        max_queued: int | None = None,
        max_queued_bytes: int | None = None,
    ) -> None:
        if in_flight < 1 or max_items < 1:
            raise ValueError("in_flight and max_items must be at least 1")
        self._send = send
        self._window_s = window_s
        self._max_items = max_items
        self._max_bytes = _UNBOUNDED if max_bytes is None else max_bytes
        self._in_flight = in_flight
        self._max_queued = _UNBOUNDED if max_queued is None else max_queued
        self._max_queued_bytes = (
            _UNBOUNDED if max_queued_bytes is None else max_queued_bytes
        )
        self._queues: dict[K, _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def closing(self) -> bool:
        """Whether ``close`` was called: nothing more is taken."""
        return self._closing

    def queued(self, key: K) -> int:
        """Items waiting for ``key``, not yet sent."""
        queue = self._queues.get(key)
        return 0 if queue is None else queue.count

    def submit(self, key: K, items: Sequence[T], size: int = 0) -> asyncio.Future[R]:
        """Queue ``items`` (``size`` bytes in all) for ``key``, as one chunk.

        Returns:
            A future for the call that carries them: its result, or its
            exception. Cancelling it before the call goes out drops them.

        Raises:
            Closed: the batcher is closing.
            QueueFull: the key's queue is at its cap.
        """
        queue = self._admit(key)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        queue.chunks.append(_Chunk(list(items), size, future))
        queue.open = None  # later ``add`` calls go after this chunk
        self._queued(key, queue, len(items), size)
        return future

    def add(self, key: K, item: T, size: int = 0) -> None:
        """Queue one item (``size`` bytes) for ``key`` in its open chunk; no
        future: ``send`` alone sees the outcome.

        Raises:
            Closed: the batcher is closing.
            QueueFull: the key's queue is at its cap.
        """
        # ``_admit`` and ``_queued`` written out: this runs once per event.
        if self._closing:
            raise Closed("shutting down")
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
        elif queue.count >= self._max_queued or queue.size >= self._max_queued_bytes:
            raise QueueFull(f"{key!r} has {queue.count} items queued")
        chunk = queue.open
        if (
            chunk is None
            or chunk.count >= self._max_items
            or chunk.size + size > self._max_bytes
        ):
            # A full open chunk is closed, so that no batch passes a cap.
            chunk = queue.open = _Chunk([], 0, None)
            queue.chunks.append(chunk)
        chunk.items.append(item)
        chunk.count += 1
        chunk.size += size
        queue.count += 1
        queue.size += size
        if not queue.due and queue.timer is None:
            queue.timer = asyncio.get_running_loop().call_later(
                self._window_s, self._on_window, key
            )
        if queue.count >= self._max_items or queue.size >= self._max_bytes:
            self._pump(key, queue)

    def has_room(self, key: K) -> bool:
        """Whether ``key``'s queue is under its caps (``submit`` and ``add``
        would not raise ``QueueFull``)."""
        queue = self._queues.get(key)
        return queue is None or self._has_room(queue)

    async def wait_for_room(self, key: K) -> None:
        """Wait until ``key``'s queue is under its caps: back-pressure for a
        producer that can wait rather than fail.

        Raises:
            Closed: the batcher is closing.
        """
        queue = self._queues.get(key)
        while queue is not None and not self._has_room(queue):
            if self._closing:
                raise Closed("shutting down")
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue.waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in queue.waiters:  # cancelled while waiting
                    queue.waiters.remove(waiter)
            # The queue may have emptied and been dropped meanwhile.
            queue = self._queues.get(key)
        if self._closing:
            raise Closed("shutting down")

    async def put(self, key: K, items: Sequence[T], size: int = 0) -> asyncio.Future[R]:
        """``submit``, waiting for room instead of raising ``QueueFull``.

        Raises:
            Closed: the batcher is closing.
        """
        await self.wait_for_room(key)
        return self.submit(key, items, size)

    async def flush(self) -> None:
        """Send everything queued without waiting for windows, and wait until
        every call has finished (their outcomes are in the futures)."""
        while True:
            for key, queue in list(self._queues.items()):
                if queue.chunks:
                    queue.due = True
                    self._pump(key, queue)
            if not self._tasks:
                return
            # ``wait``, not ``gather``: cancelling a flush must not cancel the
            # calls, whose outcomes other submitters are waiting for.
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        """Take nothing more; send everything queued and wait for it."""
        self._closing = True
        for queue in self._queues.values():
            self._wake(queue)  # producers waiting for room learn of the close
        await self.flush()

    def _admit(self, key: K) -> _Queue:
        if self._closing:
            raise Closed("shutting down")
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
        elif queue.count >= self._max_queued or queue.size >= self._max_queued_bytes:
            raise QueueFull(f"{key!r} has {queue.count} items queued")
        return queue

    def _queued(self, key: K, queue: _Queue, count: int, size: int) -> None:
        queue.count += count
        queue.size += size
        if not queue.due and queue.timer is None:
            # The key's first queued item starts its window.
            queue.timer = asyncio.get_running_loop().call_later(
                self._window_s, self._on_window, key
            )
        if queue.count >= self._max_items or queue.size >= self._max_bytes:
            self._pump(key, queue)

    def _has_room(self, queue: _Queue) -> bool:
        return queue.count < self._max_queued and queue.size < self._max_queued_bytes

    def _on_window(self, key: K) -> None:
        queue = self._queues.get(key)
        if queue is None:
            return
        queue.timer = None
        queue.due = True
        self._pump(key, queue)

    def _pump(self, key: K, queue: _Queue) -> None:
        cut = False
        while (
            queue.chunks
            and queue.in_flight < self._in_flight
            # A full batch goes at once; what is left after it waits for the
            # window, which started with the queue's first item.
            and (
                queue.due
                or queue.count >= self._max_items
                or queue.size >= self._max_bytes
            )
        ):
            cut = True
            batch = self._cut(queue)
            if not batch:  # every chunk in it was abandoned
                continue
            queue.in_flight += 1
            task = asyncio.create_task(self._run(key, queue, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not queue.chunks:
            # Whatever comes next starts a fresh window.
            queue.open = None
            queue.due = False
            if queue.timer is not None:
                queue.timer.cancel()
                queue.timer = None
            # Keys come and go (tenants): keep no idle queue.
            if (
                not queue.in_flight
                and not queue.waiters
                and self._queues.get(key) is queue
            ):
                del self._queues[key]
        # Chunks left behind when due have had their window: they stay due.
        if cut and queue.waiters and self._has_room(queue):
            self._wake(queue)

    @staticmethod
    def _wake(queue: _Queue) -> None:
        waiters, queue.waiters = queue.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _cut(self, queue: _Queue) -> list[_Chunk]:
        batch: list[_Chunk] = []
        count = size = taken = 0
        for chunk in queue.chunks:
            if batch and (
                count + chunk.count > self._max_items
                or size + chunk.size > self._max_bytes
            ):
                break
            taken += 1
            queue.count -= chunk.count
            queue.size -= chunk.size
            if chunk.future is not None and chunk.future.done():
                continue  # cancelled: its submitter gave up on it
            batch.append(chunk)
            count += chunk.count
            size += chunk.size
        if taken == len(queue.chunks):
            queue.open = None  # it is in this batch: ``add`` starts another
        del queue.chunks[:taken]
        return batch

    async def _run(self, key: K, queue: _Queue, batch: list[_Chunk]) -> None:
        items = (
            batch[0].items
            if len(batch) == 1
            else [item for chunk in batch for item in chunk.items]
        )
        try:
            result = await self._send(key, items)
        except asyncio.CancelledError:
            queue.in_flight -= 1
            for chunk in batch:
                if chunk.future is not None:
                    chunk.future.cancel()
            # Nobody awaits these tasks, so a cancel of this one means the
            # loop is shutting down: start nothing new then. (A cancellation
            # that merely escaped ``send`` leaves the key working.)
            task = asyncio.current_task()
            if task is None or not task.cancelling():
                self._pump(key, queue)
            raise
        except BaseException as exc:
            for chunk in batch:
                if chunk.future is not None and not chunk.future.done():
                    chunk.future.set_exception(exc)
            queue.in_flight -= 1
            self._pump(key, queue)
            if not isinstance(exc, Exception):
                raise
        else:
            for chunk in batch:
                if chunk.future is not None and not chunk.future.done():
                    chunk.future.set_result(result)
            queue.in_flight -= 1
            self._pump(key, queue)
