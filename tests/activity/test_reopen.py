"""A closed job reopened by late events, through the delivery activity on a
real dev server: each generation a run of its own, started from the closed
run's result; racing reopeners land every event in exactly one version."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import REGISTRY
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from actors import routing
from actors.activities import Activities
from actors.contracts import DeliverInput, DeliverResult, JobOutcome
from actors.pipelines import collected
from actors.rules.job import JobSettings
from actors.rules.proxy import JobDelivery
from actors.rules.tenant import TenantSettings
from actors.settings import WorkerConfig
from sinks import FileSink
from tests.support.events import event, opened, part
from tests.support.records import file_records
from tests.support.scenario import running_workers
from tests.support.temporal import job_deliveries, start_input
from wire import parse_event

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = WorkerConfig(
    shards=1,
    tenant=TenantSettings(summary_interval_s=3600),
    job=JobSettings(default_deadline_s=600, linger_s=600, reopen=True),
)
PARTS = 6


def _deliveries(how: str) -> float:
    return (
        REGISTRY.get_sample_value("eventflow_job_deliveries_total", {"how": how}) or 0
    )


async def _deliver(
    activities: Activities,
    client: Client,
    job: str,
    events: list[bytes],
    delivery_id: str,
) -> DeliverResult:
    env = ActivityEnvironment(client)
    env.info = dataclasses.replace(env.info, task_queue=routing.task_queue(0))
    return await env.run(
        activities.deliver,
        DeliverInput(
            deliveries=[
                JobDelivery(
                    tenant_id="acme",
                    job_id=job,
                    events=[parse_event(e) for e in events],
                )
            ],
            rejections=[],
            at=T0,
            delivery_id=delivery_id,
        ),
    )


def _results(root: Path) -> list[dict]:
    """The job.result records the delivery (``out``) and the job's own
    worker (``workers``: a timed-out version) wrote."""
    return [
        r
        for folder in ("out", "workers")
        for r in file_records(root / folder)
        if r["type"] == "job.result"
    ]


async def _generations(client: Client, job: str) -> dict[str, JobOutcome]:
    """Every run of the job, by workflow id, once all have closed."""
    ids = [
        e.id
        async for e in client.list_workflows(f"WorkflowId STARTS_WITH 'job/acme/{job}'")
    ]
    outcomes = {}
    for workflow_id in ids:
        handle = client.get_workflow_handle(workflow_id, result_type=JobOutcome)
        outcomes[workflow_id] = await handle.result()
    return outcomes


async def _timed_out(activities: Activities, client: Client, job: str) -> None:
    """A job with part 0 of PARTS, timed out after a second: closed at v1."""
    await _deliver(
        activities,
        client,
        job,
        [
            opened("acme", job, ["detect"], deadline_s=1),
            part("acme", job, "detect", 0, PARTS),
        ],
        f"first/{job}",
    )
    handle = client.get_workflow_handle(
        routing.job_id_of("acme", job), result_type=JobOutcome
    )
    outcome = await asyncio.wait_for(handle.result(), timeout=30)
    assert (outcome.version, outcome.status) == (1, "timed_out")


async def test_racing_late_deliveries_each_land_in_exactly_one_version(
    temporal, tmp_path: Path
) -> None:
    sink = FileSink(tmp_path / "out")
    activities = Activities(
        client=temporal.client, sink=sink, pipeline=collected, config=CONFIG
    )
    async with running_workers(temporal.client, tmp_path / "workers", CONFIG):
        await _timed_out(activities, temporal.client, "r1")
        refused_before = _deliveries("start_refused")
        # Five deliveries at once, each one missing part, all finding the
        # job closed at generation 0: they race for generation 1 and on.
        results = await asyncio.gather(
            *(
                _deliver(
                    activities,
                    temporal.client,
                    "r1",
                    [part("acme", "r1", "detect", n, PARTS)],
                    f"late/{n}",
                )
                for n in range(1, PARTS)
            )
        )
        outcomes = await _generations(temporal.client, "r1")
    await sink.close()
    assert [r.ack.accepted for r in results] == [1] * (PARTS - 1)
    assert _deliveries("start_refused") > refused_before, "the reopeners raced"
    # One version per delivery, each with everything before it (the job's
    # own worker wrote the timed-out v1), and one closed run per version: the
    # first and one per reopening.
    records = _results(tmp_path)
    versions = sorted((r["version"], r["events"]) for r in records)
    assert versions == [(v, v + 1) for v in range(1, PARTS + 1)]
    assert sorted(records, key=lambda r: r["version"])[-1]["missing"] == {}
    assert sorted(outcomes) == sorted(
        routing.job_run_id("acme", "r1", g) for g in range(PARTS)
    )
    last = outcomes[routing.job_run_id("acme", "r1", PARTS - 1)]
    assert last.state is not None
    assert (last.version, last.state.generation) == (PARTS, PARTS - 1)
    assert sorted(last.state.outcomes) == sorted(
        ["r1-open"] + [f"r1-detect-{n}" for n in range(PARTS)]
    )


async def test_a_late_delivery_retried_or_redelivered_starts_no_new_run(
    temporal, tmp_path: Path
) -> None:
    sink = FileSink(tmp_path / "out")
    activities = Activities(
        client=temporal.client, sink=sink, pipeline=collected, config=CONFIG
    )
    late = [part("acme", "r2", "detect", 1, PARTS)]
    async with running_workers(temporal.client, tmp_path / "workers", CONFIG):
        await _timed_out(activities, temporal.client, "r2")
        first = await _deliver(activities, temporal.client, "r2", late, "late/r2")
        # The same delivery retried (after its run closed), and the same event
        # redelivered in a delivery of its own.
        retried = await _deliver(activities, temporal.client, "r2", late, "late/r2")
        again = await _deliver(activities, temporal.client, "r2", late, "later/r2")
        outcomes = await _generations(temporal.client, "r2")
        reopened = temporal.client.get_workflow_handle(
            routing.job_run_id("acme", "r2", 1)
        )
        took = await job_deliveries(reopened)
    await sink.close()
    assert (first.ack.accepted, retried.ack.accepted) == (1, 1)
    assert (again.ack.accepted, again.ack.duplicates) == (0, 1)
    assert first.rollups == retried.rollups
    assert again.rollups == {}
    assert sorted(outcomes) == [
        routing.job_run_id("acme", "r2", 0),
        routing.job_run_id("acme", "r2", 1),
    ]
    assert took == 1  # the reopening started with the late batch in its input
    versions = sorted(r["result_id"] for r in _results(tmp_path))
    assert versions == ["acme/r2/1", "acme/r2/2"]


async def test_a_delivery_after_the_linger_is_dead_lettered_as_too_late(
    temporal, tmp_path: Path
) -> None:
    config = dataclasses.replace(
        CONFIG, job=JobSettings(default_deadline_s=600, linger_s=1.5, reopen=True)
    )
    sink = FileSink(tmp_path / "out")
    activities = Activities(
        client=temporal.client, sink=sink, pipeline=collected, config=config
    )
    async with running_workers(temporal.client, tmp_path / "workers", config):
        await _timed_out(activities, temporal.client, "r3")
        await asyncio.sleep(2)
        result = await _deliver(
            activities,
            temporal.client,
            "r3",
            [part("acme", "r3", "detect", 1, PARTS)],
            "late/r3",
        )
        outcomes = await _generations(temporal.client, "r3")
    await sink.close()
    assert (result.too_late, result.ack.accepted) == (1, 0)
    assert list(outcomes) == [routing.job_id_of("acme", "r3")]
    (dead,) = [r for r in file_records(tmp_path / "out") if r["type"] == "dead_letter"]
    assert dead["event_id"] == "r3-detect-1"
    assert "job already closed" in dead["reason"]


async def test_without_eager_start_a_closed_job_reopens_by_update_with_start(
    temporal, tmp_path: Path
) -> None:
    config = dataclasses.replace(CONFIG, eager_start=False)
    sink = FileSink(tmp_path / "out")
    activities = Activities(
        client=temporal.client, sink=sink, pipeline=collected, config=config
    )
    async with running_workers(temporal.client, tmp_path / "workers", config):
        await _timed_out(activities, temporal.client, "r4")
        result = await _deliver(
            activities,
            temporal.client,
            "r4",
            [part("acme", "r4", "detect", 1, PARTS)],
            "late/r4",
        )
        outcomes = await _generations(temporal.client, "r4")
        reopened = temporal.client.get_workflow_handle(
            routing.job_run_id("acme", "r4", 1)
        )
        took = await job_deliveries(reopened)
    await sink.close()
    assert result.ack.accepted == 1
    assert took == 1  # one update, its start carrying only the closed state
    last = outcomes[routing.job_run_id("acme", "r4", 1)]
    assert last.state is not None
    assert (last.version, last.status, last.state.generation) == (2, "amended", 1)


def _big(job: str, n: int, seed: int) -> bytes:
    """A part with a payload near the edge's 256 KiB limit."""
    blob = random.Random(seed).randbytes(120_000).hex()
    return event(
        "analysis.result",
        event_id=f"{job}-detect-{n}",
        tenant_id="acme",
        job_id=job,
        analysis_type="detect",
        part=n,
        parts=4,
        payload={"blob": blob},
    )


async def test_a_late_batch_too_large_to_travel_with_the_closed_state_goes_as_an_update(
    temporal, tmp_path: Path
) -> None:
    sink = FileSink(tmp_path / "out")
    activities = Activities(
        client=temporal.client, sink=sink, pipeline=collected, config=CONFIG
    )
    job = "big"
    async with running_workers(temporal.client, tmp_path / "workers", CONFIG):
        await _deliver(
            activities,
            temporal.client,
            job,
            [
                opened("acme", job, ["detect"], deadline_s=1),
                _big(job, 0, 0),
                _big(job, 1, 1),
            ],
            "first",
        )
        first = temporal.client.get_workflow_handle(
            routing.job_id_of("acme", job), result_type=JobOutcome
        )
        await asyncio.wait_for(first.result(), timeout=30)
        # Generation 1 starts with its batch: the closed state is small.
        await _deliver(activities, temporal.client, job, [_big(job, 2, 2)], "late/1")
        # Generation 1 closed holding three parts and their publication
        # (about 1.4 MiB before compression): with a fourth part, past the
        # job's byte cap and refused, its input would be too large.
        refused = await _deliver(
            activities, temporal.client, job, [_big(job, 3, 3)], "late/2"
        )
        outcomes = await _generations(temporal.client, job)
        inputs = [
            await start_input(
                temporal.client.get_workflow_handle(routing.job_run_id("acme", job, g))
            )
            for g in (1, 2)
        ]
    await sink.close()
    assert refused.ack.rejected == 1
    assert [i.batch is not None for i in inputs] == [True, False]
    last = outcomes[routing.job_run_id("acme", job, 2)]
    assert last.state is not None
    assert (last.version, last.state.generation) == (2, 2)
    (dead,) = [r for r in file_records(tmp_path / "out") if r["type"] == "dead_letter"]
    assert "would hold more than" in dead["reason"]


async def test_a_late_event_counts_its_linger_from_the_latest_generation(
    temporal, tmp_path: Path
) -> None:
    """Past the first generation's linger but within its reopening's, an
    event still reopens the job (a third generation), not too late."""
    linger = 6.0
    config = dataclasses.replace(
        CONFIG, job=JobSettings(default_deadline_s=600, linger_s=linger, reopen=True)
    )
    sink = FileSink(tmp_path / "out")
    activities = Activities(
        client=temporal.client, sink=sink, pipeline=collected, config=config
    )
    async with running_workers(temporal.client, tmp_path / "workers", config):
        await _timed_out(activities, temporal.client, "r5")
        first = await temporal.client.get_workflow_handle(
            routing.job_id_of("acme", "r5"), result_type=JobOutcome
        ).result()
        assert first.state is not None
        published = first.state.last_published_at
        assert published is not None

        async def at(seconds: float) -> None:
            now = datetime.now(UTC)
            await asyncio.sleep(max(0.0, (published - now).total_seconds() + seconds))

        await at(3.0)  # generation 1: its linger runs to about 9 s
        await _deliver(
            activities,
            temporal.client,
            "r5",
            [part("acme", "r5", "detect", 1, PARTS)],
            "late/1",
        )
        await at(linger + 1.5)  # past generation 0's linger only
        result = await _deliver(
            activities,
            temporal.client,
            "r5",
            [part("acme", "r5", "detect", 2, PARTS)],
            "late/2",
        )
        outcomes = await _generations(temporal.client, "r5")
    await sink.close()
    assert (result.ack.accepted, result.too_late) == (1, 0)
    last = outcomes[routing.job_run_id("acme", "r5", 2)]
    assert (last.version, last.status) == (3, "amended")
