"""Retiring shards when the shard count shrinks.

A retired shard's proxy refuses new batches, delivers and reports what it
holds, and completes. Its task queue is then served until no workflow is left
on it (a sender still on the old shard count may have started the proxy
again), so nothing is stranded on a queue no worker polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import stamina
import structlog
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from actors import names, routing

log = structlog.get_logger("runtime.retire")

POLL_S = 2.0


def _retire_raced(exc: Exception) -> bool:
    """Worth another try: the proxy pushed back (it is continuing as new or
    still delivering a full outbox), or its run ended (completed or continued
    as new) under the update."""
    if isinstance(exc, WorkflowUpdateFailedError):
        cause = exc.cause
        return isinstance(cause, ApplicationError) and cause.type == names.BACKPRESSURE
    return isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND


async def retire_proxy(client: Client, shard: int) -> int:
    """Close ``proxy/{shard}`` once it holds nothing; returns how many events
    it held when retired (0 when it was not running)."""
    handle = client.get_workflow_handle(routing.proxy_id(shard))
    async for attempt in stamina.retry_context(
        on=_retire_raced,
        attempts=None,  # as long as it takes: retiring waits for the proxy
        timeout=None,
        wait_initial=POLL_S / 4,
        wait_max=POLL_S,
        wait_jitter=POLL_S / 4,
    ):
        with attempt:
            try:
                description = await handle.describe()
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    return 0
                raise
            if description.status != WorkflowExecutionStatus.RUNNING:
                return 0
            held = await handle.execute_update(names.PROXY_RETIRE, result_type=int)
            log.info("proxy retired", shard=shard, held=held)
            return held
    raise AssertionError("unreachable: stamina returns or raises")


def _running_on(shards: Sequence[int]) -> str:
    queues = ", ".join(f"'{routing.task_queue(shard)}'" for shard in shards)
    return f"TaskQueue IN ({queues}) AND ExecutionStatus = 'Running'"


async def running_on(client: Client, shards: Sequence[int]) -> int:
    """Workflows still running on the task queues of ``shards``."""
    return (await client.count_workflows(_running_on(shards))).count


async def retire_shards(client: Client, shards: Sequence[int]) -> None:
    """Retire every shard in ``shards``; returns once no workflow is left on
    their task queues. The caller serves those queues meanwhile."""
    held = await asyncio.gather(*(retire_proxy(client, shard) for shard in shards))
    log.info("proxies retired", shards=list(shards), held=sum(held))
    while left := await running_on(client, shards):
        log.info("waiting for workflows on retired shards", running=left)
        await asyncio.sleep(POLL_S)
    log.info("shards retired", shards=list(shards))
