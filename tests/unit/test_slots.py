"""runtime.slots: polled tasks and eager starts draw on separate slot counts."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from actors.settings import WorkerConfig
from runtime.slots import HeadroomSlots
from runtime.worker import ENTITY_ACTIVITY_SLOTS, entity_slots

CTX = SimpleNamespace(slot_type="workflow", task_queue="q", is_sticky=False)


def release(slots: HeadroomSlots, permit: object) -> None:
    slots.release_slot(SimpleNamespace(slot_info=None, permit=permit))


async def test_polled_tasks_cannot_take_the_eager_slots() -> None:
    slots = HeadroomSlots(polled=2, eager=1)
    held = [await slots.reserve_slot(CTX), await slots.reserve_slot(CTX)]
    third = asyncio.create_task(slots.reserve_slot(CTX))
    await asyncio.sleep(0.01)
    assert not third.done()
    # The pollers' share is full, yet an eager start still gets its slot.
    eager = slots.try_reserve_slot(CTX)
    assert eager is not None
    assert slots.try_reserve_slot(CTX) is None
    assert slots.in_use == (2, 1)
    # Freeing an eager slot does not let a poller in; freeing a polled one does.
    release(slots, eager)
    await asyncio.sleep(0.01)
    assert not third.done()
    release(slots, held[0])
    await asyncio.wait_for(third, 1)
    assert slots.in_use == (2, 0)


async def test_a_cancelled_poller_passes_its_wake_up_on() -> None:
    slots = HeadroomSlots(polled=1, eager=0)
    held = await slots.reserve_slot(CTX)
    first = asyncio.create_task(slots.reserve_slot(CTX))
    second = asyncio.create_task(slots.reserve_slot(CTX))
    await asyncio.sleep(0.01)
    release(slots, held)
    first.cancel()  # woken and cancelled in the same turn
    await asyncio.wait_for(second, 1)
    assert first.cancelled()
    assert slots.in_use == (1, 0)


async def test_no_eager_slots_means_no_eager_start() -> None:
    slots = HeadroomSlots(polled=4, eager=0)
    assert slots.try_reserve_slot(CTX) is None


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="polled >= 1"):
        HeadroomSlots(polled=0, eager=1)


def test_the_entity_worker_keeps_headroom_for_eager_starts_unless_told_not_to() -> None:
    tuned = entity_slots(WorkerConfig(workflow_task_slots=8, eager_task_slots=24))
    supplier = tuned["tuner"]._get_workflow_task_slot_supplier()
    assert isinstance(supplier, HeadroomSlots)
    assert (supplier.polled_limit, supplier.eager_limit) == (8, 24)
    shared = entity_slots(WorkerConfig(workflow_task_slots=8, eager_task_slots=0))
    assert shared == {
        "max_concurrent_workflow_tasks": 8,
        "max_concurrent_activities": ENTITY_ACTIVITY_SLOTS,
    }
