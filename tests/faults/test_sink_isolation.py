"""Scenario 11: one sink of two down for as long as the rest of the run.

A worker writes to the files and to PostgreSQL. PostgreSQL stops (as a
crash would) a third of the way in and stays down until the file sink holds
every record the workload yields: the outage must delay only what still has
to reach PostgreSQL. Its batches go to catch-up workflows meanwhile; once it
is back they land, and both sinks hold each record once, exactly as the
workload should yield.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from temporalio.client import Client

from actors import names
from sinks import redact_url
from tests.support.audit import audit
from tests.support.faults import Row, all_landed, report, settle, workload, write_events
from tests.support.postgres import PostgresServer
from tests.support.processes import Emitter, run_script
from tests.support.records import file_progress, file_records
from tests.support.sql import as_dicts, read_tables, sql_progress
from wire import DATA_CONVERTER
from wire.synthetic import generate


@pytest.fixture
def durable_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of its own, with fsync on: it is crashed and restarted."""
    server = PostgresServer(durable=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def catch_ups(address: str, status: str) -> int:
    client = await Client.connect(address, data_converter=DATA_CONVERTER)
    query = f"WorkflowType = '{names.SINK_CATCH_UP}' AND ExecutionStatus = '{status}'"
    return (await client.count_workflows(query)).count


async def test_one_sink_down_delays_only_what_it_still_has_to_take(
    file_dev_server, worker_process, durable_postgres: PostgresServer, tmp_path: Path
) -> None:
    spec = workload(seed=31, run="iso-sink-")
    lines, expected = generate(spec)
    server = durable_postgres
    url = server.new_database()
    out = tmp_path / "out"
    address = file_dev_server.address
    args = ["--shards", "4", "--sink", f"file:{out}", "--sink", url]
    args += ["--summary-interval", "1"]
    worker = worker_process(address, args)
    emitter = Emitter(address, write_events(tmp_path, lines))

    deadline = time.monotonic() + 300
    while (await file_progress(out)).results < len(expected.payloads) // 3:
        assert time.monotonic() < deadline, "no progress before the outage"
        await asyncio.sleep(0.2)
    before = await sql_progress(url)
    await asyncio.to_thread(server.halt)
    halted = time.monotonic()

    # With PostgreSQL down the whole time, the files get everything.
    summary = emitter.wait()
    assert summary["sent"] == len(lines)
    files_done = await settle(lambda: file_progress(out), all_landed(expected))
    assert (await file_progress(out)).results == len(expected.payloads), (
        "the file sink did not get every result while PostgreSQL was down"
    )
    waiting = await catch_ups(address, "Running")
    assert waiting > 0, "nothing was deferred for the sink that was down"
    # The operator asks which sink is behind, and why.
    shown = run_script("script.inspect", "sinks", "--json", address=address)
    assert shown.returncode == 0, shown.stderr.decode()[-2000:]
    (behind,) = msgspec.json.decode(shown.stdout)
    assert behind["sink"] == redact_url(url)
    assert behind["records"] > 0
    assert behind["batches"] == waiting

    await asyncio.to_thread(server.start)
    restarted = time.monotonic()
    assert (await sql_progress(url)).results >= before.results, "rows lost"
    landed = await settle(lambda: sql_progress(url), all_landed(expected))
    deadline = time.monotonic() + 120
    while await catch_ups(address, "Running"):
        assert time.monotonic() < deadline, "catch-up workflows still running"
        await asyncio.sleep(0.5)
    shown = run_script("script.inspect", "sinks", address=address)
    assert shown.stdout.decode().startswith("no sink is behind"), shown.stdout

    files = audit(file_records(out), expected)
    tables = await read_tables(url)
    sql = audit(as_dicts(tables, expected), expected)
    report(
        Row.of(
            "11. One sink of two down for the rest of the run",
            sql,
            events_sent=len(lines),
            faults=(
                f"PostgreSQL stopped a third in, for {restarted - halted:.0f} s "
                f"(until the file sink held everything, "
                f"{files_done - halted:.0f} s after the stop); "
                f"{await catch_ups(address, 'Completed')} catch-up workflows"
            ),
            recovery_s=landed - restarted,
        )
    )
    assert worker.process is not None
    assert worker.process.poll() is None, (
        f"the worker exited:\n{worker.log.read_text()[-4000:]}"
    )
    assert files.clean, files.problems()
    assert sql.clean, sql.problems()
    assert len(tables["job.result"]) == len(expected.payloads)
