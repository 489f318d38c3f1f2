"""The pipeline into SQL tables end to end: a real dev server, a real worker
process writing to SQLite or to a real PostgreSQL, a generated workload sent
with ``script.emit``, then every table checked against what the workload
should have produced."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import text

from actors.models import EXAMPLE, detections, job_parts
from sinks.sql import SqlSink
from tests.support.audit import audit
from tests.support.polling import wait_until
from tests.support.processes import ROOT, run_script
from tests.support.records import Progress, file_progress, file_records
from tests.support.sql import as_dicts, read_model_rows, read_tables, sql_progress
from tests.support.temporal import address_of
from wire.models import ModelTable
from wire.synthetic import WorkloadSpec, generate

SPEC = WorkloadSpec(
    tenants=4, jobs=60, types=3, parts=2, duplicates=0.1, early=0.3, invalid=0.05
)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_a_workload_lands_in_the_tables_once_per_job(
    database: str,
    temporal,
    worker_process,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    lines, expected = generate(SPEC)
    assert expected.dead_letters > 0, "the workload has invalid events"
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(lines) + b"\n")
    if database == "sqlite":
        url = f"sqlite:{tmp_path}/data/eventflow.db"
    else:
        url = request.getfixturevalue("postgres_url")
    address = address_of(temporal)
    worker_process(address, ["--shards", "4", "--sink", url, "--summary-interval", "1"])

    emitted = run_script(
        "script.emit", "--file", str(events_file), "--json", address=address
    )
    summary = msgspec.json.decode(emitted.stdout)
    assert summary["sent"] == len(lines)
    assert summary["duplicates"] > 0

    await wait_until(
        lambda: sql_progress(url),
        lambda p: (
            p.results >= SPEC.jobs
            and p.dead_letters >= expected.dead_letters
            and p.jobs_completed >= SPEC.jobs
        ),
        limit_s=300,
    )
    held = await read_tables(url)
    report = audit(as_dicts(held, expected), expected)
    assert report.clean, report.problems()

    # One row per job in job_results, all version 1 and complete.
    results = held["job.result"]
    assert Counter(f"{r.tenant_id}/{r.job_id}" for r in results) == Counter(
        set(expected.payloads)
    )
    assert {(r.version, r.status) for r in results} == {(1, "complete")}
    # Summaries: every job counted once, every accepted event once.
    summaries = held["tenant.summary"]
    assert sum(s.jobs_completed for s in summaries) == SPEC.jobs
    assert sum(s.events for s in summaries) == sum(
        expected.events(key) for key in expected.payloads
    )
    assert all(d.reason for d in held["dead_letter"])
    # The view: the latest version of each job, here the only one.
    async with SqlSink(url) as sink:
        await sink.ensure_schema()
        table = f'"{sink.schema}".jobs_current' if sink.schema else "jobs_current"
        async with sink.engine.connect() as conn:
            current = (
                await conn.execute(text(f"SELECT count(*) FROM {table}"))
            ).scalar()
    assert current == SPEC.jobs
    # The built-in job_parts model: one row per part, in the table and its view.
    rows = (await read_model_rows(url, [job_parts.table]))["job_parts"]
    assert Counter((r["tenant_id"], r["job_id"]) for r in rows) == Counter(
        {tuple(key.split("/")): SPEC.types * SPEC.parts for key in expected.payloads}
    )
    for r in rows:
        want = expected.payloads[f"{r['tenant_id']}/{r['job_id']}"]
        assert r["payload"] == msgspec.json.decode(want[r["analysis_type"]][r["part"]])
    async with SqlSink(url) as sink:
        view = "job_parts_current"
        if sink.schema:
            view = f'"{sink.schema}".{view}'
        async with sink.engine.connect() as conn:
            query = text(f"SELECT count(*) FROM {view}")
            in_view = (await conn.execute(query)).scalar()
    assert in_view == len(rows)


def test_a_worker_refuses_to_start_on_a_model_table_it_cannot_write(
    tmp_path: Path,
) -> None:
    """The database's detections table was made with another key: the worker
    says what changed and exits before it connects (no server is needed)."""
    url = f"sqlite:{tmp_path}/eventflow.db"
    other = ModelTable("detections", detections.row, ("part",))

    async def make() -> None:
        async with SqlSink(url, tables=[other]) as sink:
            await sink.prepare()

    asyncio.run(make())

    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "script.worker",
            *("--sink", url, "--model", EXAMPLE, "--connect-timeout", "1"),
        ],
        cwd=ROOT,
        env={**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert refused.returncode == 1
    assert "cannot start" in refused.stderr
    assert "model table detections" in refused.stderr
    assert "its key changed from (result_id, part) to (result_id, part, index)" in (
        refused.stderr
    )
    assert "detections_v2" in refused.stderr


async def test_two_sinks_at_once_each_hold_every_record_once(
    temporal, worker_process, tmp_path: Path
) -> None:
    spec = WorkloadSpec(
        tenants=3, jobs=30, types=2, parts=2, duplicates=0.1, invalid=0.05
    )
    lines, expected = generate(spec)
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(lines) + b"\n")
    out, url = tmp_path / "out", f"sqlite:{tmp_path}/eventflow.db"
    address = address_of(temporal)
    worker_process(
        address,
        ["--sink", f"file:{out}", "--sink", url, "--summary-interval", "1"],
    )
    run_script("script.emit", "--file", str(events_file), address=address)

    def done(p: Progress) -> bool:
        return (
            p.results >= spec.jobs
            and p.dead_letters >= expected.dead_letters
            and p.jobs_completed >= spec.jobs
        )

    await wait_until(lambda: file_progress(out), done, limit_s=180)
    await wait_until(lambda: sql_progress(url), done, limit_s=60)
    from_files = audit(file_records(out), expected)
    assert from_files.clean, from_files.problems()
    from_tables = audit(as_dicts(await read_tables(url), expected), expected)
    assert from_tables.clean, from_tables.problems()
    assert len(read_lines_of(out / "job_parts.jsonl")) == len(
        (await read_model_rows(url, [job_parts.table]))["job_parts"]
    )


def read_lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []
