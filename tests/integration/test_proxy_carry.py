"""A proxy that continues as new carries the jobs it holds into its next run:
a job whose events straddle the proxy's continue-as-new still gets one
delivery, its held events wait on in the new run (its query shows them),
and nothing is lost or doubled."""

from __future__ import annotations

from pathlib import Path

from actors import names, routing
from actors.rules.job import JobSettings
from actors.settings import WorkerConfig
from ingress.sender import EventSender
from tests.support.events import opened, part
from tests.support.polling import wait_until
from tests.support.records import file_records
from tests.support.scenario import running_workers
from tests.support.temporal import job_deliveries

# One shard that holds an incomplete job for five minutes and continues as
# new every 40 history events: a few complete jobs drive it over.
CONFIG = WorkerConfig(
    shards=1,
    hold_s=300.0,
    proxy_continue_as_new_after=40,
    job=JobSettings(linger_s=2),
)


def results(out: Path) -> dict[str, dict]:
    return {r["job_id"]: r for r in file_records(out) if r["type"] == "job.result"}


async def results_now(out: Path) -> dict[str, dict]:
    return results(out)


async def test_a_held_job_rides_across_the_proxys_continue_as_new(
    temporal, tmp_path: Path
) -> None:
    client = temporal.client
    proxy = client.get_workflow_handle(routing.proxy_id(0))
    async with running_workers(client, tmp_path, CONFIG):
        sender = EventSender(client, shards=1)
        for line in (
            opened("acme", "straddle", ["detect"]),
            part("acme", "straddle", "detect", 0, 2),
        ):
            await sender.send(line)
        await sender.flush()
        first_run = (await proxy.describe()).run_id
        fillers = 0
        while (await proxy.describe()).run_id == first_run:
            assert fillers < 100, "the proxy never continued as new"
            for line in (
                opened("acme", f"filler-{fillers}", ["detect"]),
                part("acme", f"filler-{fillers}", "detect", 0, 1),
            ):
                await sender.send(line)
            await sender.flush()
            fillers += 1
        # The new run holds the job's events; none reached the job.
        held = await proxy.query(
            names.PROXY_HELD, "acme/straddle", result_type=list[str]
        )
        assert held == ["straddle-open", "straddle-detect-0"]
        assert "straddle" not in results(tmp_path)

        await sender.send(part("acme", "straddle", "detect", 1, 2))
        await sender.flush()
        await wait_until(
            lambda: results_now(tmp_path),
            lambda found: "straddle" in found and len(found) == fillers + 1,
            limit_s=60,
        )
        job = client.get_workflow_handle(routing.job_id_of("acme", "straddle"))
        deliveries = await job_deliveries(job)

    found = results(tmp_path)
    assert len(found) == fillers + 1, "every job once, none doubled"
    straddle = found["straddle"]
    assert (straddle["version"], straddle["status"], straddle["events"]) == (
        1,
        "complete",
        3,
    )
    assert deliveries == 1, "the straddling job got one delivery"
