"""Scenario: late events reopen closed jobs while the worker is SIGKILLed.

Every job times out with one part of three, closes, and is then reopened
twice by a late part (two waves, a kill in the middle of each, with a few
redeliveries of earlier parts mixed in). Each job must end with exactly
versions 1 (timed out), 2 and 3 (amended), each holding everything before
it, and the last complete: a retried delivery that finds its reopened run
closed must not reopen it again, nor lose its batch."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from pathlib import Path

import msgspec
from temporalio.client import Client

from tests.support.audit import Audit
from tests.support.events import opened, part
from tests.support.faults import Row, jobs, report, settle
from tests.support.processes import Emitter
from tests.support.records import file_progress, file_records

PARTS = 3
TENANTS = 5


def _key(n: int) -> tuple[str, str]:
    return f"t{n % TENANTS}", f"reopen-{n}"


def _wave(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


async def _results_at_least(out: Path, count: int, limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s
    while (await file_progress(out)).results < count:
        assert time.monotonic() < deadline, f"fewer than {count} results landed"
        await asyncio.sleep(0.1)


def _audit(records: list[dict], count: int) -> Audit:
    """Each job: versions 1-3 exactly once, the right status and events, the
    last with every part's payload; nothing else."""
    result = Audit(expected_results=3 * count, expected_dead_letters=0)
    versions: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if record["type"] == "job.result":
            versions[f"{record['tenant_id']}/{record['job_id']}"].append(record)
            result.results += 1
        elif record["type"] == "dead_letter":
            result.dead_letters += 1
    result.dead_letter_difference = result.dead_letters
    for n in range(count):
        tenant, job = _key(n)
        key = f"{tenant}/{job}"
        got = sorted(versions.pop(key, []), key=lambda r: r["version"])
        numbers = [r["version"] for r in got]
        result.lost += [f"{key} v{v}" for v in (1, 2, 3) if v not in numbers]
        result.duplicated += [
            f"{key} v{v}" for v in set(numbers) if numbers.count(v) > 1
        ]
        result.wrong += [f"{key} v{v}" for v in numbers if v not in (1, 2, 3)]
        for record in got:
            version = record["version"]
            status = "timed_out" if version == 1 else "amended"
            if (record["status"], record["events"]) != (status, version + 1):
                result.wrong.append(
                    f"{key} v{version}: {record['status']}, {record['events']} events"
                )
        if got and got[-1]["version"] == 3:
            payloads = got[-1]["analyses"]["detect"]["payloads"]
            want = [
                msgspec.json.decode(part(tenant, job, "detect", i, PARTS))["payload"]
                for i in range(PARTS)
            ]
            if payloads != want or got[-1]["missing"]:
                result.wrong.append(f"{key} v3: payloads or missing differ")
    result.wrong += [f"{key}: not in the workload" for key in versions]
    # The tenants count each version once: timed out, then amended twice.
    result.summarized_jobs = sum(
        r["jobs_timed_out"] + r["jobs_amended"]
        for r in records
        if r["type"] == "tenant.summary"
    )
    return result


async def test_late_events_reopening_jobs_survive_worker_kills(
    file_dev_server, worker_process, tmp_path: Path
) -> None:
    count = jobs(120, 1200)
    out = tmp_path / "out"
    address = file_dev_server.address
    args = ["--shards", "4", "--sink", f"file:{out}", "--summary-interval", "1"]
    worker = worker_process(address, args)
    rng = random.Random(17)
    first = []
    for n in range(count):
        tenant, job = _key(n)
        first += [
            opened(tenant, job, ["detect"], deadline_s=2),
            part(tenant, job, "detect", 0, PARTS),
        ]
    sent = 0
    emitter = Emitter(address, _wave(tmp_path / "wave-0.jsonl", first))
    sent += emitter.wait()["sent"]
    await _results_at_least(out, count)  # every job timed out and closed

    kills = 0
    at_kill: list[int] = []  # this wave's versions landed when it was killed
    restarted = time.monotonic()
    for wave in (1, 2):
        lines = []
        for n in rng.sample(range(count), count):
            tenant, job = _key(n)
            lines.append(part(tenant, job, "detect", wave, PARTS))
            if rng.random() < 0.1:  # a redelivery of an earlier part
                lines.append(part(tenant, job, "detect", rng.randrange(wave), PARTS))
        emitter = Emitter(address, _wave(tmp_path / f"wave-{wave}.jsonl", lines))
        # Kill once this wave's reopenings have begun to land.
        await _results_at_least(out, wave * count + 1)
        worker.kill()
        kills += 1
        at_kill.append((await file_progress(out)).results - wave * count)
        await asyncio.sleep(1.0)
        worker.start()
        restarted = time.monotonic()
        sent += emitter.wait()["sent"]
        await _results_at_least(out, (wave + 1) * count)

    landed = await settle(lambda: file_progress(out), lambda p: p.results >= 3 * count)
    result = _audit(file_records(out), count)
    client = await Client.connect(address)
    third = [
        e.id async for e in client.list_workflows("WorkflowId STARTS_WITH 'job/t0/'")
    ]
    report(
        Row.of(
            "12. late events reopen closed jobs, worker SIGKILL",
            result,
            events_sent=sent,
            faults=f"{kills} x SIGKILL of the worker while late parts reopen "
            f"closed jobs ({', '.join(f'{n} of {count}' for n in at_kill)} "
            "reopenings landed), restarted after 1 s",
            recovery_s=landed - restarted,
        )
    )
    assert result.clean, result.problems()
    # The versions came from reopened runs, not from jobs left open.
    assert sum(1 for i in third if i.endswith("/2")) == count // TENANTS
