"""Scenario 1: the worker process is SIGKILLed mid-run, several times, and
restarted. Workflows resume from their histories, activities retry, and the
sink still holds exactly one result per job."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from actors.models import job_parts
from tests.support.audit import audit
from tests.support.faults import (
    Row,
    all_landed,
    report,
    settle,
    workload,
    write_events,
)
from tests.support.postgres import PostgresServer
from tests.support.processes import Emitter
from tests.support.records import file_progress, file_records
from tests.support.sql import as_dicts, read_model_rows, read_tables, sql_progress
from wire.synthetic import generate

KILLS = 3


async def test_worker_killed_repeatedly_loses_and_doubles_nothing(
    file_dev_server, worker_process, tmp_path: Path
) -> None:
    spec = workload(seed=11, run="kill-")
    lines, expected = generate(spec)
    out = tmp_path / "out"
    address = file_dev_server.address
    args = ["--shards", "4", "--sink", f"file:{out}", "--summary-interval", "1"]
    worker = worker_process(address, args)
    emitter = Emitter(address, write_events(tmp_path, lines))

    # Kill while results are landing: some jobs done, many in flight.
    kills = 0
    for _ in range(KILLS):
        target = (kills + 1) * len(expected.payloads) // (KILLS + 2)
        deadline = time.monotonic() + 300
        while (await file_progress(out)).results < target:
            assert time.monotonic() < deadline, "no progress before a kill"
            await asyncio.sleep(0.1)
        worker.kill()
        kills += 1
        await asyncio.sleep(1.0)
        worker.start()
    restarted = time.monotonic()

    summary = emitter.wait()
    assert summary["sent"] == len(lines)
    landed = await settle(lambda: file_progress(out), all_landed(expected))

    result = audit(file_records(out), expected)
    report(
        Row.of(
            "1. worker SIGKILL",
            result,
            events_sent=len(lines),
            faults=f"{kills} x SIGKILL of the worker, restarted after 1 s",
            recovery_s=landed - restarted,
        )
    )
    assert result.clean, result.problems()


async def test_one_of_two_workers_on_postgresql_killed_loses_and_doubles_nothing(
    file_dev_server, worker_process, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """Two worker processes serving every shard write to one PostgreSQL; one
    is SIGKILLed a third of the way in and stays dead. The other takes over
    its workflows and retries its activities, and every table holds each
    key once, exactly as the workload should yield."""
    spec = workload(seed=13, run="kill-pg-")
    lines, expected = generate(spec)
    url = postgres_server.new_database()
    address = file_dev_server.address
    args = ["--shards", "4", "--sink", url, "--summary-interval", "1"]
    doomed = worker_process(address, args)
    survivor = worker_process(address, args)
    emitter = Emitter(address, write_events(tmp_path, lines))

    deadline = time.monotonic() + 300
    while (await sql_progress(url)).results < len(expected.payloads) // 3:
        assert time.monotonic() < deadline, "no progress before the kill"
        await asyncio.sleep(0.1)
    doomed.kill()
    killed = time.monotonic()

    summary = emitter.wait()
    assert summary["sent"] == len(lines)
    landed = await settle(lambda: sql_progress(url), all_landed(expected))
    tables = await read_tables(url)
    result = audit(as_dicts(tables, expected), expected)
    report(
        Row.of(
            "1. worker SIGKILL (one of two, PostgreSQL sink)",
            result,
            events_sent=len(lines),
            faults="SIGKILL of one of two worker processes, not restarted",
            recovery_s=landed - killed,
        )
    )
    assert survivor.process is not None
    assert survivor.process.poll() is None, survivor.log.read_text()[-4000:]
    assert result.clean, result.problems()
    assert len(tables["job.result"]) == len(expected.payloads)
    # The built-in job_parts model too: every part of every job, once.
    rows = (await read_model_rows(url, [job_parts.table]))["job_parts"]
    assert Counter((r["tenant_id"], r["job_id"]) for r in rows) == Counter(
        {tuple(key.split("/")): spec.types * spec.parts for key in expected.payloads}
    )
