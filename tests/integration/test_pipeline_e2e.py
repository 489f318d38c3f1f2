"""The whole pipeline end to end: real dev server, real worker and emitter
processes, real sinks."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest

from actors.models import job_parts
from tests.support.polling import wait_until
from tests.support.processes import run_script
from tests.support.records import (
    Progress,
    file_progress,
    file_records,
    redis_progress,
    redis_records,
)
from tests.support.sql import (
    as_dicts,
    count_rows,
    read_model_rows,
    read_tables,
    sql_progress,
)
from tests.support.temporal import address_of
from wire.synthetic import ACCEPTANCE, Expected, generate

# The contract's acceptance workload: 5,000 jobs across 50 tenants, 5%
# redeliveries, results before job.opened, 1% invalid events. `make test`
# (CI) runs it at 1,000 jobs on every sink; `make e2e` at the full 5,000.
JOBS = int(os.environ.get("EVENTFLOW_E2E_JOBS", "5000"))


def check_results(records: list[dict], expected: Expected, jobs: int) -> None:
    results = [r for r in records if r["type"] == "job.result"]
    per_job = Counter(f"{r['tenant_id']}/{r['job_id']}" for r in results)
    assert len(per_job) == jobs, "every job has a result"
    assert set(per_job.values()) == {1}, "no job has more than one result"
    for result in results:
        key = f"{result['tenant_id']}/{result['job_id']}"
        assert result["result_id"] == f"{key}/1"
        assert result["status"] == "complete"
        assert result["version"] == 1
        assert result["missing"] == {}
        assert result["events"] == expected.events(key)
        want = expected.payloads[key]
        assert list(result["analyses"]) == list(want)
        for analysis_type, payloads in want.items():
            got = result["analyses"][analysis_type]
            assert got["parts"] == len(payloads)
            assert got["payloads"] == [msgspec.json.decode(p) for p in payloads]
    dead = [r for r in records if r["type"] == "dead_letter"]
    assert len(dead) == expected.dead_letters
    assert len({d["dead_letter_id"] for d in dead}) == len(dead)
    assert all(d["reason"] for d in dead)
    summaries = [r for r in records if r["type"] == "tenant.summary"]
    assert sum(s["jobs_completed"] for s in summaries) == jobs
    assert sum(s["events"] for s in summaries) == sum(
        expected.events(k) for k in expected.payloads
    )
    assert len({s["summary_id"] for s in summaries}) == len(summaries)


@pytest.mark.parametrize("sink", ["file", "redis", "sqlite", "postgresql"])
@pytest.mark.slow
async def test_workload_yields_one_result_per_job_and_one_dead_letter_per_bad_event(
    sink: str,
    temporal,
    worker_process,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    spec = replace(ACCEPTANCE, jobs=JOBS)
    lines, expected = generate(spec)
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    sink_url = {
        "file": lambda: f"file:{out}",
        "redis": lambda: request.getfixturevalue("redis_url"),
        "sqlite": lambda: f"sqlite:{tmp_path}/eventflow.db",
        "postgresql": lambda: request.getfixturevalue("postgres_url"),
    }[sink]()
    address = address_of(temporal)
    worker_process(
        address, ["--shards", "4", "--sink", sink_url, "--summary-interval", "1"]
    )

    emitted = run_script(
        "script.emit", "--file", str(events_file), "--json", address=address
    )
    summary = msgspec.json.decode(emitted.stdout)
    assert summary["sent"] == len(lines)
    assert summary["accepted"] + summary["duplicates"] + summary["rejected"] == len(
        lines
    )

    def complete(p: Progress) -> bool:
        return (
            p.results >= spec.jobs
            and p.dead_letters >= expected.dead_letters
            and p.jobs_completed >= spec.jobs
        )

    if sink == "file":
        await wait_until(lambda: file_progress(out), complete, limit_s=900)
        records = file_records(out)
    elif sink == "redis":
        await wait_until(lambda: redis_progress(sink_url), complete, limit_s=900)
        records = await redis_records(sink_url)
    else:
        await wait_until(lambda: sql_progress(sink_url), complete, limit_s=900)
        records = as_dicts(await read_tables(sink_url), expected)
        # Every table: the latest version of each job, one job_parts row per
        # part received, the example model's rows beside them.
        rows = (await read_model_rows(sink_url, [job_parts.table]))["job_parts"]
        assert Counter((r["tenant_id"], r["job_id"]) for r in rows) == Counter(
            {tuple(k.split("/")): spec.types * spec.parts for k in expected.payloads}
        )
        assert await count_rows(sink_url, "jobs_current") == spec.jobs
        assert await count_rows(sink_url, "job_parts_current") == len(rows)
    check_results(records, expected, spec.jobs)
