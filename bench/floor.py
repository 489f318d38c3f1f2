"""The floor: what the cheapest Temporal primitives do with a trivial workflow.

A job costs at least what the primitive that starts it (and feeds it its
events) costs, so every workload row in the benchmark is read against these.
Each primitive runs ``count`` trivial workflows, each to a distinct id, from
``concurrency`` callers, with the worker in the caller's process (the only
way an eager start can be served), against the same file-backed dev server
as the workloads. Measured: workflows per second, and the server's and this
process's CPU milliseconds per workflow.

The primitives (``PRIMITIVES``):

* ``uws-complete``: update-with-start; the workflow completes after the update.
* ``uws-timer``: update-with-start, then the workflow waits on a one-hour
  timer (the shape of a job today: it stays open after its result).
* ``start``: ``start_workflow``, not eager, waiting for the result.
* ``start-eager``: ``start_workflow(request_eager_start=True)``, waiting.
* ``start-eager-timer``: eager start, then a one-hour timer.
* ``start-eager-nowait``: eager start, not waiting for the result.
* ``signal-with-start``: signal-with-start, then the workflow completes.
* ``update-running``: one update to a workflow started beforehand (the
  start is not timed): what feeding a running job costs.

Benchmark code only; production never registers these workflows.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import psutil
from temporalio import workflow
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import (
    SandboxedWorkflowRunner,
    SandboxRestrictions,
)

FLOOR_TASK_QUEUE = "eventflow-floor"


@workflow.defn(name="Floor")
class FloorWorkflow:
    """Takes one update or signal (or none), then completes or waits an hour."""

    def __init__(self) -> None:
        self._touched = False

    @workflow.update
    def touch(self) -> None:
        self._touched = True

    @workflow.signal
    def poke(self) -> None:
        self._touched = True

    @workflow.run
    async def run(self, wait_for_touch: bool, linger: bool) -> None:
        if wait_for_touch:
            await workflow.wait_condition(lambda: self._touched)
        if linger:
            await workflow.sleep(timedelta(hours=1))


Call = Callable[[Client, str], Awaitable[object]]


def _start(wait_for_touch: bool, linger: bool, wid: str) -> WithStartWorkflowOperation:
    return WithStartWorkflowOperation(
        FloorWorkflow.run,
        args=[wait_for_touch, linger],
        id=wid,
        task_queue=FLOOR_TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def _uws(client: Client, wid: str, *, linger: bool) -> None:
    await client.execute_update_with_start_workflow(
        FloorWorkflow.touch, start_workflow_operation=_start(True, linger, wid)
    )


async def _start_workflow(
    client: Client, wid: str, *, eager: bool, linger: bool, wait: bool
) -> None:
    handle = await client.start_workflow(
        FloorWorkflow.run,
        args=[False, linger],
        id=wid,
        task_queue=FLOOR_TASK_QUEUE,
        request_eager_start=eager,
    )
    if wait and not linger:
        await handle.result()


async def _signal_with_start(client: Client, wid: str) -> None:
    handle = await client.start_workflow(
        FloorWorkflow.run,
        args=[True, False],
        id=wid,
        task_queue=FLOOR_TASK_QUEUE,
        start_signal="poke",
    )
    await handle.result()


async def _update_running(client: Client, wid: str) -> None:
    await client.get_workflow_handle(wid).execute_update(FloorWorkflow.touch)


async def _prestart(client: Client, wid: str) -> None:
    await client.start_workflow(
        FloorWorkflow.run, args=[True, False], id=wid, task_queue=FLOOR_TASK_QUEUE
    )


# name -> (the timed call, an untimed call made first for each id, or None)
PRIMITIVES: dict[str, tuple[Call, Call | None]] = {
    "uws-complete": (lambda c, w: _uws(c, w, linger=False), None),
    "uws-timer": (lambda c, w: _uws(c, w, linger=True), None),
    "start": (
        lambda c, w: _start_workflow(c, w, eager=False, linger=False, wait=True),
        None,
    ),
    "start-eager": (
        lambda c, w: _start_workflow(c, w, eager=True, linger=False, wait=True),
        None,
    ),
    "start-eager-timer": (
        lambda c, w: _start_workflow(c, w, eager=True, linger=True, wait=False),
        None,
    ),
    "start-eager-nowait": (
        lambda c, w: _start_workflow(c, w, eager=True, linger=False, wait=False),
        None,
    ),
    "signal-with-start": (_signal_with_start, None),
    "update-running": (_update_running, _prestart),
}


async def _each(client: Client, call: Call, ids: list[str], concurrency: int) -> None:
    queue = iter(ids)

    async def caller() -> None:
        for wid in queue:
            await call(client, wid)

    await asyncio.gather(*(caller() for _ in range(concurrency)))


async def measure_floor(
    address: str,
    server_pid: int,
    *,
    count: int,
    concurrency: int = 100,
    primitives: list[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Each primitive's rate and CPU cost on the server at ``address``
    (default data converter: these workflows carry no data)."""
    client = await Client.connect(address)
    server = psutil.Process(server_pid)
    me = psutil.Process(os.getpid())

    def cpu(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    results: dict[str, dict[str, float]] = {}
    async with Worker(
        client,
        task_queue=FLOOR_TASK_QUEUE,
        workflows=[FloorWorkflow],
        max_concurrent_workflow_tasks=100,
        # Passed through, as the production workers pass theirs: the floor is
        # Temporal's cost, not a sandbox re-importing this module per run.
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("bench")
        ),
    ):
        for name in primitives or list(PRIMITIVES):
            call, before = PRIMITIVES[name]
            run = uuid.uuid4().hex[:8]
            ids = [f"floor/{name}/{run}/{n}" for n in range(count)]
            if before is not None:
                await _each(client, before, ids, concurrency)
            server0, me0, t0 = cpu(server), cpu(me), time.monotonic()
            await _each(client, call, ids, concurrency)
            elapsed = time.monotonic() - t0
            results[name] = {
                "workflows_per_s": round(count / elapsed, 1),
                "server_cpu_ms_each": round((cpu(server) - server0) / count * 1000, 2),
                "caller_and_worker_cpu_ms_each": round(
                    (cpu(me) - me0) / count * 1000, 2
                ),
                "seconds": round(elapsed, 2),
            }
    return results


def fastest(floor: dict[str, dict[str, float]]) -> tuple[str, float]:
    """The primitive with the highest rate, and that rate (workflows/s)."""
    name = max(floor, key=lambda n: floor[n]["workflows_per_s"])
    return name, floor[name]["workflows_per_s"]
