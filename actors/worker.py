"""Assembling the workers of one process."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import (
    SandboxedWorkflowRunner,
    SandboxRestrictions,
)

from actors import routing
from actors.activities import Activities
from actors.config import WorkerConfig
from actors.job import JobWorkflow
from actors.pipelines import Pipeline
from actors.proxy import ProxyWorkflow
from actors.tenant import TenantWorkflow
from sinks import Sink

WORKFLOWS = [ProxyWorkflow, JobWorkflow, TenantWorkflow]

# Workflow tasks one process works on at once, shared by its shard workers.
# A worker process holds one core at most (GIL), so more slots only queue
# tasks inside the process, where they can time out (10 s), instead of on the
# server, where they wait safely.
WORKFLOW_TASK_SLOTS = 32
ACTIVITY_SLOTS = 256
# Workflows one process keeps in memory (sticky cache), shared by its shard
# workers. A finished job rarely needs its cached instance again; an evicted
# one replays its short history if it does. This bounds the worker's memory
# (about 875 MiB peak with 4,000 cached job instances on the burst workload).
CACHED_WORKFLOWS = 1500

# Deterministic, side-effect-free modules the workflows use. Passing them
# through spares the sandbox re-importing them for every workflow run.
PASSTHROUGH = (
    "wire",
    "sinks",
    "actors.rules",
    "actors.contracts",
    "actors.activities",
    "actors.routing",
    "actors.pipelines",
    "actors.config",
    "msgspec",
    "zstandard",
    "structlog",
    "redis",
    "aiofiles",
)


def workflow_runner(*, strict: bool = False) -> SandboxedWorkflowRunner:
    """The sandbox the workflows run in.

    Strict (replay tests, scenario tests): the workflow modules themselves are
    re-imported into the sandbox for every run, so the sandbox polices every
    call they make (a clock, randomness, I/O fail loudly there). Production
    (``strict=False``) passes the workflow modules through as well: creating a
    sandboxed instance per new job otherwise re-imports and recompiles the
    workflow module, which profiled at over a quarter of the worker's CPU in
    a burst of new jobs. Determinism stays guarded by the strict runs in CI.
    """
    modules = PASSTHROUGH if strict else (*PASSTHROUGH, "actors")
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules)
    )


def build_workers(
    client: Client,
    *,
    config: WorkerConfig,
    sink: Sink,
    pipeline: Pipeline,
    shards: Sequence[int],
    strict: bool = False,
) -> list[Worker]:
    """One worker per shard task queue, sharing one set of activities."""
    activities = Activities(client=client, sink=sink, pipeline=pipeline, config=config)
    return [
        Worker(
            client,
            task_queue=routing.task_queue(shard),
            workflows=WORKFLOWS,
            activities=[
                activities.proxy_settings,
                activities.deliver,
                activities.publish_job,
                activities.publish_summary,
                activities.report,
            ],
            workflow_runner=workflow_runner(strict=strict),
            max_concurrent_workflow_tasks=max(2, WORKFLOW_TASK_SLOTS // len(shards)),
            max_cached_workflows=max(100, CACHED_WORKFLOWS // len(shards)),
            # Activities mostly wait on the server; they are cheap to run many.
            max_concurrent_activities=max(16, ACTIVITY_SLOTS // len(shards)),
            graceful_shutdown_timeout=timedelta(seconds=10),
        )
        for shard in shards
    ]
