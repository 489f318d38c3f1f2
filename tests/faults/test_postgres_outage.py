"""Scenario 10: the PostgreSQL sink's server stops mid-run, twice, as a crash
would (``pg_ctl stop -m immediate``), and comes back on the same port,
recovering from its write-ahead log. Sink writes fail meanwhile (a batch's
transaction rolls back or never commits); the activities retry with backoff,
and afterwards every table holds each key once and exactly what the workload
should yield."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.audit import audit
from tests.support.faults import Row, all_landed, report, settle, workload, write_events
from tests.support.postgres import PostgresServer
from tests.support.processes import Emitter
from tests.support.sql import as_dicts, read_tables, sql_progress
from wire.synthetic import generate

OUTAGES = 2
DOWN_S = 5.0


@pytest.fixture
def durable_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of its own, with fsync on: it is crashed and restarted."""
    server = PostgresServer(durable=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_postgres_down_twice_mid_run_loses_and_doubles_nothing(
    file_dev_server, worker_process, durable_postgres: PostgresServer, tmp_path: Path
) -> None:
    spec = workload(seed=29, run="pg-")
    lines, expected = generate(spec)
    server = durable_postgres
    url = server.new_database()
    address = file_dev_server.address
    args = ["--shards", "4", "--sink", url, "--summary-interval", "1"]
    worker = worker_process(address, args)
    emitter = Emitter(address, write_events(tmp_path, lines))

    # Stop PostgreSQL while results are landing: some written, many on their way.
    outages = 0
    restarted = time.monotonic()
    for _ in range(OUTAGES):
        target = (outages + 1) * len(expected.payloads) // (OUTAGES + 2)
        deadline = time.monotonic() + 300
        while (await sql_progress(url)).results < target:
            assert time.monotonic() < deadline, "no progress before an outage"
            await asyncio.sleep(0.2)
        held = await sql_progress(url)
        await asyncio.to_thread(server.halt)
        outages += 1
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(server.start)
        restarted = time.monotonic()
        # What was committed before the crash is still there.
        assert (await sql_progress(url)).results >= held.results, "rows lost"

    summary = emitter.wait()
    assert summary["sent"] == len(lines)
    landed = await settle(lambda: sql_progress(url), all_landed(expected))

    tables = await read_tables(url)
    result = audit(as_dicts(tables, expected), expected)
    report(
        Row.of(
            "10. PostgreSQL sink outage",
            result,
            events_sent=len(lines),
            faults=(
                f"{outages} x PostgreSQL stopped mid-run (immediate, as a crash) "
                f"for {DOWN_S:g} s, restarted on its data directory"
            ),
            recovery_s=landed - restarted,
        )
    )
    assert worker.process is not None
    assert worker.process.poll() is None, (
        f"the worker exited:\n{worker.log.read_text()[-4000:]}"
    )
    # Keys are primary keys, so a doubled row cannot exist; the audit checks
    # that each expected record is there once, with its exact contents.
    assert result.clean, result.problems()
    assert len(tables["job.result"]) == len(expected.payloads)
