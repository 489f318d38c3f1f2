"""Assembling the workers of one process."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import FixedSizeSlotSupplier, Worker, WorkerTuner
from temporalio.worker.workflow_sandbox import (
    SandboxedWorkflowRunner,
    SandboxRestrictions,
)

from actors import routing
from actors.activities import Activities
from actors.models import Model
from actors.pipelines import Pipeline
from actors.settings import WorkerConfig
from actors.workflows import (
    JobWorkflow,
    ProxyWorkflow,
    SinkCatchUpWorkflow,
    TenantWorkflow,
)
from runtime.slots import HeadroomSlots
from sinks import Sink
from wire._converter import prime_struct_types

# Per shard worker: a proxy makes few, small workflow tasks.
PROXY_TASK_SLOTS = 4
PROXY_CACHED_WORKFLOWS = 100
# Delivery activities, split between a process's shard workers.
ACTIVITY_SLOTS = 256
# publish_job and publish_summary: jobs publishing on their deadline.
ENTITY_ACTIVITY_SLOTS = 64

# Deterministic, side-effect-free modules the workflows use. Passing them
# through spares the sandbox re-importing them for every workflow run.
# Workflow modules import only these (names, contracts, policies, rules and
# the wire), never activity code, so no sink or client module needs to pass.
PASSTHROUGH = (
    "wire",
    "actors.names",
    "actors.rules",
    "actors.contracts",
    "actors.policies",
    "msgspec",
    "zstandard",
    # The SDK's tracing interceptor runs inside the sandbox too.
    "opentelemetry",
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
    models: Sequence[Model] = (),
    entities: bool = True,
    strict: bool = False,
) -> list[Worker]:
    """One worker per shard task queue (a proxy, its settings, deliveries and
    reports), and one for the entity task queue (jobs, tenants and sink
    catch-ups, and the publications and writes they make themselves) unless
    ``entities`` is false; all share one set of activities, so their sink
    writes coalesce.
    """
    activities = Activities(
        client=client, sink=sink, pipeline=pipeline, config=config, models=models
    )
    runner = workflow_runner(strict=strict)
    # Before any workflow thread decodes a payload (see prime_struct_types).
    prime_struct_types()
    workers = [
        Worker(
            client,
            task_queue=routing.task_queue(shard),
            workflows=[ProxyWorkflow],
            activities=[
                activities.proxy_settings,
                activities.deliver,
                activities.report,
            ],
            workflow_runner=runner,
            max_concurrent_workflow_tasks=PROXY_TASK_SLOTS,
            max_cached_workflows=PROXY_CACHED_WORKFLOWS,
            # Deliveries mostly wait on the server; they are cheap to run many.
            max_concurrent_activities=max(16, ACTIVITY_SLOTS // len(shards)),
            graceful_shutdown_timeout=timedelta(seconds=10),
        )
        for shard in shards
    ]
    if entities:
        workers.append(
            Worker(
                client,
                task_queue=routing.ENTITY_TASK_QUEUE,
                workflows=[JobWorkflow, TenantWorkflow, SinkCatchUpWorkflow],
                activities=[
                    activities.publish_job,
                    activities.publish_summary,
                    activities.write_sink,
                ],
                workflow_runner=runner,
                **entity_slots(config),
                max_cached_workflows=config.cached_workflows,
                graceful_shutdown_timeout=timedelta(seconds=10),
            )
        )
    return workers


def entity_slots(config: WorkerConfig) -> dict[str, object]:
    """The entity worker's slot arguments: its workflow task slots, with
    ``eager_task_slots`` more kept for eager starts (``runtime.slots``)."""
    if not config.eager_task_slots:
        return {
            "max_concurrent_workflow_tasks": config.workflow_task_slots,
            "max_concurrent_activities": ENTITY_ACTIVITY_SLOTS,
        }
    default = FixedSizeSlotSupplier(100)
    return {
        "tuner": WorkerTuner.create_composite(
            workflow_supplier=HeadroomSlots(
                polled=config.workflow_task_slots, eager=config.eager_task_slots
            ),
            activity_supplier=FixedSizeSlotSupplier(ENTITY_ACTIVITY_SLOTS),
            local_activity_supplier=default,
            nexus_supplier=default,
        )
    }
