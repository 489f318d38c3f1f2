"""``script.inspect`` answers an operator's questions about a real run: a job
that waits for parts, a finished one, one whose events its proxy still holds,
a tenant, the shards; and an unknown job or tenant is a message and exit 1."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import msgspec

from actors.rules.job import JobSettings
from actors.rules.tenant import TenantSettings
from actors.settings import WorkerConfig
from ingress.sender import EventSender
from tests.support.events import opened, part
from tests.support.processes import ROOT
from tests.support.scenario import running_workers
from tests.support.temporal import address_of

SHARDS = 2


def inspect(address: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m script.inspect ARGS --shards 2``, as a process."""
    return subprocess.run(
        [sys.executable, "-m", "script.inspect", *args, "--shards", str(SHARDS)],
        cwd=ROOT,
        env={**os.environ, "TEMPORAL_ADDRESS": address},
        capture_output=True,
        timeout=120,
        check=False,
    )


async def run(address: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    # In a thread: the workers that answer the queries share this event loop.
    return await asyncio.to_thread(inspect, address, *args)


async def answer(address: str, *args: str) -> dict:
    done = await run(address, *args, "--json")
    assert done.returncode == 0, done.stderr.decode()
    return msgspec.json.decode(done.stdout)


async def answered(address: str, *args: str, until, limit_s: float = 30) -> dict:
    """Ask again until ``until(answer)`` holds (deliveries and reports take a
    moment), then return that answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while True:
        done = await run(address, *args, "--json")
        if done.returncode == 0:
            found = msgspec.json.decode(done.stdout)
            if until(found) or loop.time() > deadline:
                return found
        elif loop.time() > deadline:
            raise AssertionError(done.stderr.decode())
        await asyncio.sleep(0.5)


CONFIG = WorkerConfig(
    shards=SHARDS,
    job=JobSettings(default_deadline_s=600, linger_s=600, reopen=True),
    tenant=TenantSettings(summary_interval_s=600),
    rollup_interval_s=0.5,
)


async def test_inspect_tells_what_a_job_waits_for_and_what_a_tenant_counts(
    temporal, tmp_path: Path
) -> None:
    address = address_of(temporal)
    async with running_workers(temporal.client, tmp_path / "out", CONFIG):
        sender = EventSender(temporal.client, shards=SHARDS)
        for line in [
            opened("acme", "done", ["detect"]),
            part("acme", "done", "detect", 0, 1),
            opened("acme", "waits", ["detect", "caption"]),
            part("acme", "waits", "detect", 0, 2),
            part("acme", "waits", "embed", 0, 1),  # not required: refused
        ]:
            await sender.send(line)
        await sender.flush()

        waits = await answered(
            address, "job", "acme", "waits", until=lambda a: a["job"] is not None
        )
        done = await answered(
            address, "job", "acme", "done", until=lambda a: a["job"]["version"] == 1
        )
        # A late event (of a type it does not require) reopens the closed
        # job: inspect follows it to its next generation.
        await sender.send(part("acme", "done", "embed", 0, 1))
        await sender.flush()
        reopened = await answered(
            address,
            "job",
            "acme",
            "done",
            until=lambda a: a["job"]["generation"] == 1,
        )
        tenant = await answered(
            address,
            "tenant",
            "acme",
            until=lambda a: a["tenant"]["counts"]["jobs_completed"] == 1,
        )
        shards = await answer(address, "shards")
        text = await run(address, "job", "acme", "waits")
        unknown_job = await run(address, "job", "acme", "nope")
        unknown_tenant = await run(address, "tenant", "nobody")

    job = waits["job"]
    assert (job["version"], job["opened"], job["complete"]) == (0, True, False)
    assert job["required"] == ["detect", "caption"]
    assert job["parts"]["detect"] == {"parts": 2, "received": [0], "missing": [1]}
    assert job["parts"]["caption"] == {"parts": None, "received": [], "missing": []}
    assert (job["events"], job["refused"]) == (2, 1)
    assert job["closes_at"] is None
    assert job["deadline"] > job["first_seen"]
    assert waits["held"]["event_ids"] == []

    finished = done["job"]
    assert (finished["last_status"], finished["complete"]) == ("complete", True)
    assert finished["closes_at"] is not None
    assert (finished["generation"], done["workflow_id"]) == (0, "job/acme/done")
    again = reopened["job"]
    assert reopened["workflow_id"] == "job/acme/done/1"
    assert (again["generation"], again["version"], again["refused"]) == (1, 1, 1)
    assert again["late_until"] > again["closes_at"]

    counts = tenant["tenant"]["counts"]
    assert (counts["jobs_completed"], counts["events"]) == (1, 2)

    assert [s["shard"] for s in shards] == [0, 1]
    running = [s["proxy"] for s in shards if s["proxy"] is not None]
    assert sum(p["accepted"] for p in running) == 6
    assert all(p["held_events"] == 0 for p in running)

    readable = text.stdout.decode()
    assert text.returncode == 0
    assert "detect: 1 of 2 parts (missing 1)" in readable
    assert "caption: no part received yet" in readable

    assert unknown_job.returncode == 1
    assert b"no job acme/nope" in unknown_job.stderr
    assert b"Traceback" not in unknown_job.stderr
    assert unknown_tenant.returncode == 1
    assert b"no tenant nobody" in unknown_tenant.stderr


async def test_inspect_shows_events_a_proxy_still_holds(
    temporal, tmp_path: Path
) -> None:
    address = address_of(temporal)
    holding = dataclasses.replace(CONFIG, hold_s=300.0)
    async with running_workers(temporal.client, tmp_path / "out", holding):
        sender = EventSender(temporal.client, shards=SHARDS)
        for line in [
            opened("acme", "held", ["detect"]),
            part("acme", "held", "detect", 0, 3),
        ]:
            await sender.send(line)
        await sender.flush()
        report = await answer(address, "job", "acme", "held")
        shards = await answer(address, "shards")
        text = await run(address, "job", "acme", "held")

    assert report["job"] is None
    assert report["held"]["event_ids"] == ["held-open", "held-detect-0"]
    (holder,) = [s["proxy"] for s in shards if s["proxy"] and s["proxy"]["held_events"]]
    assert (holder["held_events"], holder["held_jobs"]) == (2, 1)
    assert holder["oldest_held_at"] is not None
    assert b"not started yet" in text.stdout


async def test_inspect_stuck_lists_old_open_jobs_with_what_they_miss(
    temporal, tmp_path: Path
) -> None:
    address = address_of(temporal)
    async with running_workers(temporal.client, tmp_path / "out", CONFIG):
        sender = EventSender(temporal.client, shards=SHARDS)
        for line in [
            opened("acme", "done", ["detect"]),
            part("acme", "done", "detect", 0, 1),
            opened("acme", "waits", ["detect", "caption"]),
            part("acme", "waits", "detect", 0, 2),
            opened("globex", "waits", ["ocr"]),
        ]:
            await sender.send(line)
        await sender.flush()

        def names(found: list[dict]) -> set[str]:
            return {s["workflow_id"] for s in found}

        # Visibility follows the jobs' own status a moment later.
        everyone = await answered(
            address,
            "stuck",
            "--older-than",
            "0s",
            until=lambda found: names(found) == {"job/acme/waits", "job/globex/waits"},
        )
        acme = await answered(
            address, "stuck", "--older-than", "0s", "--tenant", "acme", until=bool
        )
        recent = await answer(address, "stuck", "--older-than", "1h")
        text = await run(address, "stuck", "--older-than", "0s", "--tenant", "acme")

    assert names(everyone) == {"job/acme/waits", "job/globex/waits"}
    assert [s["workflow_id"] for s in acme] == ["job/acme/waits"]
    assert acme[0]["job"]["parts"]["detect"]["missing"] == [1]
    assert recent == []
    readable = text.stdout.decode()
    assert "job/acme/waits" in readable
    assert "misses detect parts 1; caption (no part yet)" in readable
