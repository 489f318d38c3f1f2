"""Workflow task slots with headroom kept for eager starts.

A new job is started eagerly (its first workflow task handed back in the
start's answer, with no task-queue round trip) only if the entity worker of
the starting process has a free workflow task slot at that moment. With a
fixed number of slots, a backlog on the task queue keeps every slot taken by
polled tasks, the eager reservation fails, the start's first task joins the
backlog, and the backlog feeds itself (BENCHMARKS.md, "Workflow task slots").

``HeadroomSlots`` keeps the two apart: tasks the pollers fetch hold at most
``polled`` slots, as a fixed supplier of that size would allow, and eager
starts may take up to ``eager`` more. So the queue's backlog never crowds out
an eager start, and eager starts never take the pollers' share.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass

from temporalio.worker import (
    CustomSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
)


@dataclass(frozen=True)
class _Permit(SlotPermit):
    eager: bool


class HeadroomSlots(CustomSlotSupplier):
    """At most ``polled`` slots for polled tasks, ``eager`` more for eager ones.

    The SDK calls ``reserve_slot`` on the worker's event loop before each
    poll, and ``try_reserve_slot`` (eager starts) and ``release_slot`` from
    its own threads, so the counts are kept under a thread lock and a waiting
    poller is woken on its own loop.
    """

    def __init__(self, *, polled: int, eager: int) -> None:
        if polled < 1 or eager < 0:
            raise ValueError(
                f"slots: polled >= 1 and eager >= 0, got {polled}, {eager}"
            )
        self.polled_limit = polled
        self.eager_limit = eager
        self._lock = threading.Lock()
        self._polled = 0
        self._eager = 0
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
            deque()
        )

    @property
    def in_use(self) -> tuple[int, int]:
        """Slots held now: (polled, eager)."""
        with self._lock:
            return self._polled, self._eager

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._polled < self.polled_limit:
                    self._polled += 1
                    return _Permit(eager=False)
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, waiter))
            try:
                await waiter
            except asyncio.CancelledError:
                with self._lock:
                    if (loop, waiter) in self._waiters:
                        self._waiters.remove((loop, waiter))
                    else:
                        # Woken, then cancelled: pass the wake-up on (a
                        # spare one only makes a poller look again).
                        self._wake_one()
                raise

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        with self._lock:
            if self._eager < self.eager_limit:
                self._eager += 1
                return _Permit(eager=True)
            return None

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        return None

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        permit = ctx.permit
        with self._lock:
            if isinstance(permit, _Permit) and permit.eager:
                self._eager -= 1
                return
            self._polled -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        # Under the lock. The woken poller takes the slot on its next pass.
        while self._waiters:
            loop, waiter = self._waiters.popleft()
            if loop.is_closed():
                continue
            loop.call_soon_threadsafe(_set, waiter)
            return


def _set(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
