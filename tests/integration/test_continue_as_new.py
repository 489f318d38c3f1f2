"""Continue-as-new under load: every entity continues-as-new many times
while updates keep arriving, and nothing is lost or counted twice."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from actors import routing
from actors.contracts import JobBatch, JobInput
from actors.job import JobWorkflow
from actors.rules.job import JobSettings, Reply
from actors.rules.tenant import TenantSettings
from actors.settings import WorkerConfig
from ingress.sender import EventSender
from tests.support.polling import wait_until
from tests.support.records import file_progress, file_records
from tests.support.scenario import running_workers
from wire import parse_event
from wire.synthetic import WorkloadSpec, generate

STORM = WorkerConfig(
    shards=2,
    job=JobSettings(continue_as_new_after=20),
    tenant=TenantSettings(summary_interval_s=1, continue_as_new_after=20),
    proxy_continue_as_new_after=30,
    delivery_batch=8,
    # Frequent rollup reports, so that tenants take many updates too.
    rollup_interval_s=0.3,
    # A short hold, so that a job's events reach it in many deliveries and
    # jobs continue as new too (held until complete, each is one delivery).
    hold_s=0.5,
)


async def runs_of(client: Client, prefix: str) -> Counter[str]:
    runs: Counter[str] = Counter()
    async for execution in client.list_workflows():
        if execution.id.startswith(prefix):
            runs[execution.id] += 1
    return runs


async def deliver_with_retry(client: Client, batch: JobBatch) -> Reply:
    """What the proxy's delivery activity does, retried the way its activity
    retries are, when the update meets a run that is closing."""
    while True:
        start = WithStartWorkflowOperation(
            JobWorkflow.run,
            JobInput(tenant_id="t", job_id="storm", settings=STORM.job),
            id=routing.job_id_of("t", "storm"),
            task_queue=routing.ENTITY_TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        try:
            return await client.execute_update_with_start_workflow(
                JobWorkflow.deliver, batch, start_workflow_operation=start
            )
        except RPCError:
            await asyncio.sleep(0.1)


async def test_job_continues_as_new_under_concurrent_updates_without_loss(
    temporal, tmp_path: Path
) -> None:
    spec = WorkloadSpec(tenants=1, jobs=1, types=4, parts=20, seed=3)
    lines, expected = generate(spec)
    events = [parse_event(line) for line in lines]
    # Re-key the generated job as t/storm, keeping its ids unique.
    events = [
        type(e)(
            **{
                **{f: getattr(e, f) for f in e.__struct_fields__},
                "tenant_id": "t",
                "job_id": "storm",
            }
        )
        for e in events
    ]
    rng = random.Random(3)
    async with running_workers(temporal.client, tmp_path, STORM):
        # Eight senders at once, each sending every event once in its own
        # order: every event arrives eight times, concurrently.
        async def sender(seed: int) -> list[Reply]:
            order = events[:]
            random.Random(seed).shuffle(order)
            return [
                await deliver_with_retry(
                    temporal.client,
                    JobBatch(events=order[i : i + 3], delivery_id=f"{seed}/{i}"),
                )
                for i in range(0, len(order), 3)
            ]

        acks = await asyncio.gather(*(sender(rng.randrange(1 << 30)) for _ in range(8)))
        runs = await runs_of(temporal.client, "job/")
    accepted = sum(a.ack.accepted for batch in acks for a in batch)
    assert accepted == len(events), "each event accepted exactly once"
    assert runs["job/t/storm"] > 3, "the job continued-as-new several times"
    # The job hands its one publication back to the delivery that completed it.
    (snapshot,) = [
        reply.publication.snapshot
        for batch in acks
        for reply in batch
        if reply.publication is not None and reply.publication.snapshot is not None
    ]
    assert (snapshot.version, snapshot.status) == (1, "complete")
    assert snapshot.events == len(events)
    key = next(iter(expected.payloads))
    for analysis_type, payloads in expected.payloads[key].items():
        slot = snapshot.slots[analysis_type]
        assert slot.filled == len(payloads)
        assert None not in slot.events


async def test_pipeline_continues_as_new_everywhere_without_loss_or_doubles(
    temporal, tmp_path: Path
) -> None:
    spec = WorkloadSpec(
        tenants=3, jobs=30, types=4, parts=10, duplicates=0.1, early=0.3, seed=11
    )
    lines, expected = generate(spec)
    async with running_workers(temporal.client, tmp_path, STORM):
        sender = EventSender(temporal.client, shards=STORM.shards, batch_size=7)
        for line in lines:
            await sender.send(line)
        await sender.flush()
        await wait_until(
            lambda: file_progress(tmp_path),
            lambda p: p.results >= spec.jobs and p.jobs_completed >= spec.jobs,
            limit_s=300,
        )
        runs = await runs_of(temporal.client, "")
    records = file_records(tmp_path)
    results = [r for r in records if r["type"] == "job.result"]
    assert len(results) == spec.jobs
    assert {r["result_id"].rsplit("/", 1)[1] for r in results} == {"1"}
    for r in results:
        assert r["events"] == expected.events(f"{r['tenant_id']}/{r['job_id']}")
    summaries = [r for r in records if r["type"] == "tenant.summary"]
    assert sum(s["jobs_completed"] for s in summaries) == spec.jobs
    assert sum(s["events"] for s in summaries) == sum(
        expected.events(k) for k in expected.payloads
    )
    kinds_that_continued = {wid.split("/")[0] for wid, n in runs.items() if n > 1}
    assert kinds_that_continued == {"proxy", "job", "tenant"}
