"""The activities in isolation (temporalio.testing.ActivityEnvironment),
against a real dev server and real sinks: retries must not double anything."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from prometheus_client import REGISTRY
from temporalio.testing import ActivityEnvironment

from actors import routing
from actors.activities import Activities
from actors.contracts import DeliverInput, PublishJobInput, ReportInput
from actors.job import JobWorkflow
from actors.pipelines import collected
from actors.rules import job as job_rules
from actors.rules.proxy import JobDelivery
from actors.rules.tenant import TenantSettings
from actors.settings import WorkerConfig
from actors.tenant import TenantWorkflow
from sinks import FileSink
from tests.support.events import opened, part
from tests.support.records import file_records
from tests.support.scenario import running_workers
from wire import parse_event

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = WorkerConfig(shards=1, tenant=TenantSettings(summary_interval_s=3600))


def complete_job_publication() -> job_rules.Publication:
    state = job_rules.new_job("acme", "j1", T0)
    events = [parse_event(opened("acme", "j1", ["detect"]))]
    events += [parse_event(part("acme", "j1", "detect", n, 2)) for n in range(2)]
    events.append(parse_event(part("acme", "j1", "detect", 0, 2, eid="clash")))
    job_rules.apply_batch(state, events)
    publication = job_rules.decide(state, T0, job_rules.JobSettings())
    assert publication is not None
    return publication


async def test_retried_publish_writes_each_record_once_and_counts_once(
    temporal, tmp_path: Path
) -> None:
    publication = complete_job_publication()
    sink = FileSink(tmp_path / "out")
    activities = Activities(
        client=temporal.client, sink=sink, pipeline=collected, config=CONFIG
    )
    payload = PublishJobInput(
        tenant_id="acme", job_id="j1", publication=publication, at=T0
    )
    async with running_workers(temporal.client, tmp_path / "workers", CONFIG):
        env = ActivityEnvironment(temporal.client)
        for attempt in (1, 2, 3):  # the first try and two retries
            env.info = dataclasses.replace(env.info, attempt=attempt)
            await env.run(activities.publish_job, payload)
        tenant = temporal.client.get_workflow_handle(routing.tenant_id_of("acme"))
        state = await tenant.query(TenantWorkflow.state)
    await sink.close()
    records = file_records(tmp_path / "out")
    assert sorted(r["type"] for r in records) == ["dead_letter", "job.result"]
    (result,) = [r for r in records if r["type"] == "job.result"]
    assert (result["result_id"], result["events"]) == ("acme/j1/1", 3)
    assert state.counts.jobs_completed == 1
    assert state.counts.events == 3
    assert state.counts.dead_letters == 1


async def test_retried_delivery_skips_jobs_the_first_attempt_reached(
    temporal, tmp_path: Path
) -> None:
    deliveries = [
        JobDelivery(
            tenant_id="acme",
            job_id=job,
            events=[parse_event(opened("acme", job, ["detect"]))],
        )
        for job in ("done-before", "still-to-do")
    ]
    sink = FileSink(tmp_path / "out")
    activities = Activities(
        client=temporal.client, sink=sink, pipeline=collected, config=CONFIG
    )
    async with running_workers(temporal.client, tmp_path / "workers", CONFIG):
        env = ActivityEnvironment(temporal.client)
        # A retry: the heartbeat of attempt 1 says delivery 0 got through.
        env.info = dataclasses.replace(
            env.info,
            attempt=2,
            heartbeat_details=[[0]],
            task_queue=routing.task_queue(0),
        )
        result = await env.run(
            activities.deliver,
            DeliverInput(
                deliveries=deliveries, rejections=[], at=T0, delivery_id="run/3"
            ),
        )
        ids = [execution.id async for execution in temporal.client.list_workflows()]
        state = await temporal.client.get_workflow_handle(
            routing.job_id_of("acme", "still-to-do")
        ).query(JobWorkflow.state)
    await sink.close()
    assert result.ack.accepted == 1
    assert routing.job_id_of("acme", "done-before") not in ids
    assert state.opened is not None
    assert msgspec.structs.asdict(state.opened)["job_id"] == "still-to-do"


async def test_delivery_writes_the_publication_a_job_hands_back_once_across_retries(
    temporal, tmp_path: Path
) -> None:
    events = [parse_event(opened("acme", "j9", ["detect"]))]
    events += [parse_event(part("acme", "j9", "detect", n, 2)) for n in range(2)]
    delivery = DeliverInput(
        deliveries=[JobDelivery(tenant_id="acme", job_id="j9", events=events)],
        rejections=[],
        at=T0,
        delivery_id="proxy-run/1",
    )
    sink = FileSink(tmp_path / "out")
    activities = Activities(
        client=temporal.client, sink=sink, pipeline=collected, config=CONFIG
    )
    async with running_workers(temporal.client, tmp_path / "workers", CONFIG):
        env = ActivityEnvironment(temporal.client)
        env.info = dataclasses.replace(env.info, task_queue=routing.task_queue(0))
        first = await env.run(activities.deliver, delivery)
        # A retry after the job answered: no heartbeat recorded it as done.
        env.info = dataclasses.replace(env.info, attempt=2)
        second = await env.run(activities.deliver, delivery)
        # Both attempts hand the same rollup back; the tenant counts it once.
        assert second.rollups == first.rollups
        for rollups in (first.rollups, second.rollups):
            await env.run(activities.report, ReportInput(rollups=rollups))
        tenant = temporal.client.get_workflow_handle(routing.tenant_id_of("acme"))
        state = await tenant.query(TenantWorkflow.state)
    await sink.close()
    assert first.ack.accepted == 3
    assert second.ack.accepted == 3, "the retry gets the first answer again"
    (result,) = file_records(tmp_path / "out")
    assert (result["result_id"], result["status"], result["events"]) == (
        "acme/j9/1",
        "complete",
        3,
    )
    assert state.counts.jobs_completed == 1
    assert state.counts.events == 3


async def test_delivery_returns_rollups_for_the_proxy_and_report_sends_them(
    temporal, tmp_path: Path
) -> None:
    events = [parse_event(opened("acme", "j7", ["detect"]))]
    events += [parse_event(part("acme", "j7", "detect", n, 2)) for n in range(2)]
    delivery = DeliverInput(
        deliveries=[JobDelivery(tenant_id="acme", job_id="j7", events=events)],
        rejections=[],
        at=T0,
        delivery_id="proxy-run/7",
    )
    sink = FileSink(tmp_path / "out")
    activities = Activities(
        client=temporal.client, sink=sink, pipeline=collected, config=CONFIG
    )
    async with running_workers(temporal.client, tmp_path / "workers", CONFIG):
        env = ActivityEnvironment(temporal.client)
        env.info = dataclasses.replace(env.info, task_queue=routing.task_queue(0))
        result = await env.run(activities.deliver, delivery)
        (delta,) = result.rollups["acme"]
        assert (delta.status, delta.events) == ("complete", 3)
        tenants = [
            e.id
            async for e in temporal.client.list_workflows()
            if e.id.startswith("tenant/")
        ]
        assert tenants == [], "the delivery left reporting to the proxy"
        for _ in range(2):  # the report, then a retry of it
            await env.run(activities.report, ReportInput(rollups=result.rollups))
        tenant = temporal.client.get_workflow_handle(routing.tenant_id_of("acme"))
        state = await tenant.query(TenantWorkflow.state)
    await sink.close()
    assert state.counts.jobs_completed == 1
    assert state.counts.events == 3


def _update_count(history) -> int:
    return sum(
        e.HasField("workflow_execution_update_accepted_event_attributes")
        for e in history.events
    )


def _deliveries(how: str) -> float:
    return (
        REGISTRY.get_sample_value("eventflow_job_deliveries_total", {"how": how}) or 0
    )


async def test_a_new_jobs_first_delivery_starts_it_eagerly_with_the_batch(
    temporal, tmp_path: Path
) -> None:
    complete = [parse_event(opened("acme", "e1", ["detect"]))]
    complete += [parse_event(part("acme", "e1", "detect", n, 2)) for n in range(2)]
    # A job whose first delivery holds no job.opened is updated (and started).
    later = [parse_event(part("acme", "e2", "detect", 0, 1))]
    delivery = DeliverInput(
        deliveries=[
            JobDelivery(tenant_id="acme", job_id="e1", events=complete),
            JobDelivery(tenant_id="acme", job_id="e2", events=later),
        ],
        rejections=[],
        at=T0,
        delivery_id="proxy-run/e",
    )
    sink = FileSink(tmp_path / "out")
    activities = Activities(
        client=temporal.client, sink=sink, pipeline=collected, config=CONFIG
    )
    eager_before, update_before = _deliveries("eager_start"), _deliveries("update")
    async with running_workers(temporal.client, tmp_path / "workers", CONFIG):
        env = ActivityEnvironment(temporal.client)
        env.info = dataclasses.replace(env.info, task_queue=routing.task_queue(0))
        result = await env.run(activities.deliver, delivery)
        started = temporal.client.get_workflow_handle(routing.job_id_of("acme", "e1"))
        state = await started.query(JobWorkflow.state)
        history = await started.fetch_history()
        updated = temporal.client.get_workflow_handle(routing.job_id_of("acme", "e2"))
        updated_history = await updated.fetch_history()
    await sink.close()
    assert result.ack.accepted == 4
    assert _deliveries("eager_start") == eager_before + 1
    assert _deliveries("update") == update_before + 1
    # The job got its events in its input: no update, and the state the
    # delivery computed (version 1, committed) is the job's own.
    assert _update_count(history) == 0
    assert (state.version, state.last_status, state.published_events) == (
        1,
        "complete",
        3,
    )
    assert state.last_delivery is not None
    assert state.last_delivery.delivery_id == "proxy-run/e/0"
    assert _update_count(updated_history) == 1
    (record,) = file_records(tmp_path / "out")
    assert (record["result_id"], record["status"], record["events"]) == (
        "acme/e1/1",
        "complete",
        3,
    )
    assert [d.status for d in result.rollups["acme"]] == ["complete"]


async def test_without_eager_start_a_new_job_is_updated(
    temporal, tmp_path: Path
) -> None:
    events = [parse_event(opened("acme", "u1", ["detect"]))]
    config = dataclasses.replace(CONFIG, eager_start=False)
    sink = FileSink(tmp_path / "out")
    activities = Activities(
        client=temporal.client, sink=sink, pipeline=collected, config=config
    )
    async with running_workers(temporal.client, tmp_path / "workers", config):
        env = ActivityEnvironment(temporal.client)
        env.info = dataclasses.replace(env.info, task_queue=routing.task_queue(0))
        await env.run(
            activities.deliver,
            DeliverInput(
                deliveries=[JobDelivery(tenant_id="acme", job_id="u1", events=events)],
                rejections=[],
                at=T0,
                delivery_id="proxy-run/u",
            ),
        )
        handle = temporal.client.get_workflow_handle(routing.job_id_of("acme", "u1"))
        history = await handle.fetch_history()
    await sink.close()
    assert _update_count(history) == 1
