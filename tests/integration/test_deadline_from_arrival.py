"""A job's deadline counts from its first event's arrival at the proxy, not
from the job's start: a proxy that holds a new job's events for its hold
must not move the job's deadline by that much."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

from actors import names, routing
from actors.rules.job import JobSettings, JobState
from actors.settings import WorkerConfig
from ingress.sender import EventSender
from tests.support.events import opened, part
from tests.support.polling import wait_until
from tests.support.records import file_records
from tests.support.scenario import running_workers

# The deadline outlasts the hold (a deadline within the hold is not held:
# ``rules.deadline_within``).
HOLD_S = 3.0
DEADLINE_S = 6.0
CONFIG = WorkerConfig(
    shards=1,
    job=JobSettings(default_deadline_s=600, linger_s=600),
    rollup_interval_s=0.5,
)


async def results(out: Path) -> list[dict]:
    return [r for r in file_records(out) if r["type"] == "job.result"]


async def test_a_held_job_times_out_at_arrival_plus_deadline(
    temporal, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    holding = dataclasses.replace(CONFIG, hold_s=HOLD_S)
    async with running_workers(temporal.client, out, holding):
        sender = EventSender(temporal.client, shards=1)
        # Incomplete: the proxy holds it for its whole hold, then delivers.
        await sender.send(opened("acme", "held", ["detect"], deadline_s=DEADLINE_S))
        await sender.send(part("acme", "held", "detect", 0, 2))
        await sender.flush()

        landed = await wait_until(
            lambda: results(out), lambda r: len(r) == 1, limit_s=60
        )
        handle = temporal.client.get_workflow_handle(routing.job_id_of("acme", "held"))
        state = await handle.query(names.JOB_STATE, result_type=JobState)
        started = (await handle.describe()).start_time

    (result,) = landed.progress
    assert result["status"] == "timed_out"
    completed = datetime.fromisoformat(result["completed_at"])
    # The job started only once the proxy's hold ran out...
    assert started - state.first_seen >= timedelta(seconds=HOLD_S - 1)
    # ...and its deadline counted from its events' arrival, not from then.
    assert completed - state.first_seen >= timedelta(seconds=DEADLINE_S)
    assert completed < started + timedelta(seconds=DEADLINE_S)


async def test_a_job_whose_deadline_is_within_the_hold_is_not_held(
    temporal, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    holding = dataclasses.replace(CONFIG, hold_s=300.0)
    async with running_workers(temporal.client, out, holding):
        sender = EventSender(temporal.client, shards=1)
        await sender.send(opened("acme", "quick", ["detect"], deadline_s=2))
        await sender.send(part("acme", "quick", "detect", 0, 2))
        await sender.flush()

        landed = await wait_until(
            lambda: results(out), lambda r: len(r) == 1, limit_s=60
        )
        handle = temporal.client.get_workflow_handle(routing.job_id_of("acme", "quick"))
        state = await handle.query(names.JOB_STATE, result_type=JobState)

    (result,) = landed.progress
    assert result["status"] == "timed_out"
    completed = datetime.fromisoformat(result["completed_at"])
    # Timed out on time, not after a 300 s hold.
    assert timedelta(seconds=2) <= completed - state.first_seen < timedelta(seconds=30)
