"""A proxy's workflow task stays under Temporal's 4 MiB completion limit.

Temporal terminates a workflow whose task completion is too large, and a
terminated proxy loses every event it held. Here a shard's proxy is given far
more than 4 MiB at once: full batches from several senders while no worker
runs (so they all reach its first workflow task), large events and large
rejected inputs piling up in it. It must take every batch, deliver everything,
and never fail a workflow task.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus

from actors.rules.proxy import MAX_BATCH_BYTES, TASK_BYTES
from actors.settings import WorkerConfig
from ingress.sender import EventSender
from tests.support.events import opened
from tests.support.polling import wait_until
from tests.support.records import file_progress, file_records
from tests.support.scenario import running_workers
from wire.validate import RAW_KEEP_BYTES

JOBS = 8
PARTS = 10
PAYLOAD_CHARS = 60_000  # each part about 60 KB; a job holds at most 768 KiB
BAD_LINES = 60  # each kept whole up to RAW_KEEP_BYTES
SENDERS = 3


def noise(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


def part_line(rng: random.Random, job: str, n: int) -> bytes:
    return json.dumps(
        {
            "type": "analysis.result",
            "at": "2026-01-01T00:00:00Z",
            "event_id": f"{job}-{n}",
            "tenant_id": "acme",
            "job_id": job,
            "analysis_type": "detect",
            "part": n,
            "parts": PARTS,
            "payload": {"blob": noise(rng, PAYLOAD_CHARS)},
        }
    ).encode()


def bad_line(rng: random.Random, n: int) -> bytes:
    # Valid JSON naming a job of this shard, refused for its unknown type:
    # its raw input is kept, so it travels to the dead letter sink whole.
    return json.dumps(
        {
            "type": "analysis.unknown",
            "event_id": f"bad-{n}",
            "tenant_id": "acme",
            "job_id": "job-0",
            "blob": noise(rng, RAW_KEEP_BYTES - 512),
        }
    ).encode()


async def failed_tasks(client: Client) -> list[str]:
    problems = []
    async for execution in client.list_workflows():
        if execution.status == WorkflowExecutionStatus.TERMINATED:
            problems.append(f"{execution.id} terminated")
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                attributes = event.workflow_task_failed_event_attributes
                problems.append(f"{execution.id}: {attributes.cause}")
    return problems


async def test_a_proxy_given_far_more_than_a_task_can_carry_loses_nothing(
    temporal, tmp_path: Path
) -> None:
    # Ten batches (Temporal's limit of updates in flight) and the task's own
    # budget, with room for the rest of the completion.
    assert MAX_BATCH_BYTES * 10 + TASK_BYTES < (4 << 20) - (512 << 10)
    rng = random.Random(20261202)
    client = temporal.client
    lines = []
    for j in range(JOBS):
        job = f"job-{j}"
        lines.append(opened("acme", job, ["detect"]))
        lines += [part_line(rng, job, n) for n in range(PARTS)]
    lines += [bad_line(rng, n) for n in range(BAD_LINES)]
    rng.shuffle(lines)
    total = sum(map(len, lines))
    assert total > 8 << 20, "well past what one task may carry"

    # One shard, several senders, no worker yet: every batch they send waits
    # for the proxy's first workflow task.
    senders = [EventSender(client, shards=1, in_flight=4) for _ in range(SENDERS)]
    chunks = [lines[n::SENDERS] for n in range(SENDERS)]

    async def send(sender: EventSender, chunk: list[bytes]) -> None:
        for line in chunk:
            await sender.send(line)
        await sender.flush()

    sending = [
        asyncio.create_task(send(s, c)) for s, c in zip(senders, chunks, strict=True)
    ]
    await asyncio.sleep(2)
    config = WorkerConfig(shards=1)
    async with running_workers(client, tmp_path, config):
        await asyncio.wait_for(asyncio.gather(*sending), timeout=120)
        landed = await wait_until(
            lambda: file_progress(tmp_path),
            lambda p: p.results >= JOBS and p.dead_letters >= BAD_LINES,
            limit_s=120,
        )
    summary = [s.summary for s in senders]
    assert sum(s.sent for s in summary) == len(lines)
    assert sum(s.rejected for s in summary) == BAD_LINES
    records = file_records(tmp_path)
    results = [r for r in records if r["type"] == "job.result"]
    dead = [r for r in records if r["type"] == "dead_letter"]
    assert sorted(r["job_id"] for r in results) == [f"job-{j}" for j in range(JOBS)]
    assert all(r["status"] == "complete" and r["events"] == PARTS + 1 for r in results)
    assert len({d["dead_letter_id"] for d in dead}) == len(dead) == BAD_LINES
    assert landed.progress.results == JOBS
    assert not await failed_tasks(client)
