"""The pipeline into SQL tables end to end: a real dev server, a real worker
process writing to SQLite or to a real PostgreSQL, a generated workload sent
with ``script.emit``, then every table checked against what the workload
should have produced."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import text

from sinks.sql import SqlSink
from tests.support.audit import audit
from tests.support.polling import wait_until
from tests.support.processes import run_script
from tests.support.sql import as_dicts, read_tables, sql_progress
from tests.support.temporal import address_of
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
