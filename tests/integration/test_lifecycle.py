"""Every path of a job's life, on a real dev server with in-process workers:
completion, duplicates, conflicts, refusals, time-outs, closing, reopening
by late events (amendments), too-late events, tenant rollups and
continue-as-new."""

from __future__ import annotations

from pathlib import Path

import msgspec

from actors.contracts import JobOutcome
from tests.support.records import file_records
from tests.support.scenario import SCENARIO_CONFIG, run_scenario, running_workers


def index(records: list[dict], kind: str, key: str) -> dict[str, dict]:
    return {r[key]: r for r in records if r["type"] == kind}


async def test_scenario_covers_every_path_and_writes_exactly_the_expected_records(
    temporal, tmp_path: Path
) -> None:
    async with running_workers(temporal.client, tmp_path, SCENARIO_CONFIG):
        await run_scenario(temporal.client)
    records = file_records(tmp_path)
    results = index(records, "job.result", "result_id")
    dead = index(records, "dead_letter", "dead_letter_id")

    # j1: results before job.opened, one duplicate, one conflict; then, its
    # linger over, a later event is too late.
    j1 = results.pop("acme/j1/1")
    assert (j1["status"], j1["events"], j1["missing"]) == ("complete", 4, {})
    assert j1["analyses"]["detect"]["payloads"] == [
        {"label": "detect-0", "score": 0.5},
        {"label": "detect-1", "score": 0.6},
    ]
    conflict = dead.pop("acme/j1/j1-conflict")
    assert "already filled by event j1-caption-0" in conflict["reason"]
    late = dead.pop("acme/j1/j1-too-late")
    assert "job already closed" in late["reason"]

    # j2: timed out with a part missing, then amended by the late part.
    j2 = results.pop("acme/j2/1")
    assert (j2["status"], j2["events"], j2["missing"]) == (
        "timed_out",
        2,
        {"detect": [1]},
    )
    assert j2["analyses"]["detect"]["payloads"][1] is None
    j2v2 = results.pop("acme/j2/2")
    assert (j2v2["status"], j2v2["events"], j2v2["missing"]) == ("amended", 3, {})
    # ... then reopened again by a type it does not require (refused once,
    # its redelivery a duplicate): a dead letter, no third version.
    assert "not required" in dead.pop("acme/j2/j2-extra")["reason"]

    # j3: a type it does not require and a disagreeing part count are refused.
    j3 = results.pop("globex/j3/1")
    assert (j3["status"], j3["events"]) == ("complete", 3)
    assert "not required" in dead.pop("globex/j3/j3-embed-0")["reason"]
    assert (
        "parts=3 disagrees with parts=2" in dead.pop("globex/j3/j3-ocr-bad")["reason"]
    )

    for n in range(12):
        assert results.pop(f"globex/m{n}/1")["status"] == "complete"
    assert results == {}, "no other result"

    (malformed,) = dead.values()
    assert malformed["source"] == "edge"
    assert malformed["reason"].startswith("not valid JSON")

    summaries = [r for r in records if r["type"] == "tenant.summary"]
    totals = {
        tenant: {
            key: sum(s[key] for s in summaries if s["tenant_id"] == tenant)
            for key in ("jobs_completed", "jobs_timed_out", "jobs_amended", "events")
        }
        for tenant in ("acme", "globex")
    }
    assert totals["acme"] == {
        "jobs_completed": 1,
        "jobs_timed_out": 1,
        "jobs_amended": 1,
        "events": 4 + 3,
    }
    assert totals["globex"] == {
        "jobs_completed": 13,
        "jobs_timed_out": 0,
        "jobs_amended": 0,
        "events": 3 + 12 * 2,
    }

    # job_parts (on by default): each result version's parts under its own
    # result_id, the timed-out j2/1 with its one part, the amended j2/2 both.
    parts = [
        msgspec.json.decode(line)
        for line in (tmp_path / "job_parts.jsonl").read_bytes().splitlines()
    ]
    j2_parts = sorted(
        (p["result_id"], p["version"], p["part"]) for p in parts if p["job_id"] == "j2"
    )
    assert j2_parts == [("acme/j2/1", 1, 0), ("acme/j2/2", 2, 0), ("acme/j2/2", 2, 1)]
    assert len(parts) == 3 + 3 + 2 + 12  # j1, j2 (two versions), j3, m0..m11
    assert {
        (p["result_id"], p["analysis_type"], p["part"]): p["payload"]
        for p in parts
        if p["job_id"] == "j1"
    } == {
        ("acme/j1/1", "caption", 0): {"label": "caption-0", "score": 0.5},
        ("acme/j1/1", "detect", 0): {"label": "detect-0", "score": 0.5},
        ("acme/j1/1", "detect", 1): {"label": "detect-1", "score": 0.6},
    }


async def test_scenario_continues_as_new_every_entity_kind(
    temporal, tmp_path: Path
) -> None:
    async with running_workers(temporal.client, tmp_path, SCENARIO_CONFIG):
        await run_scenario(temporal.client)
    runs: dict[str, set[str]] = {}
    async for execution in temporal.client.list_workflows():
        runs.setdefault(execution.id, set()).add(execution.run_id)
    multi = {wid.split("/")[0] for wid, ids in runs.items() if len(ids) > 1}
    assert {"proxy", "tenant"} <= multi


async def test_scenario_reopens_a_closed_job_in_a_generation_per_late_delivery(
    temporal, tmp_path: Path
) -> None:
    async with running_workers(temporal.client, tmp_path, SCENARIO_CONFIG):
        await run_scenario(temporal.client)
    j2 = {}
    async for execution in temporal.client.list_workflows(
        "WorkflowId STARTS_WITH 'job/acme/j2'"
    ):
        j2[execution.id] = execution
    # Every generation closed by itself (none lingers on a timer), and the
    # redelivered duplicate started none.
    assert sorted(j2) == ["job/acme/j2", "job/acme/j2/1", "job/acme/j2/2"]
    assert {e.status.name for e in j2.values()} == {"COMPLETED"}
    outcomes = [
        await temporal.client.get_workflow_handle(wid, result_type=JobOutcome).result()
        for wid in sorted(j2)
    ]
    assert [(o.version, o.status) for o in outcomes] == [
        (1, "timed_out"),
        (2, "amended"),
        (2, "amended"),
    ]
    last = outcomes[-1].state
    assert last is not None
    assert last.generation == 2
    assert last.outcomes == {
        "j2-open": "accepted",
        "j2-detect-0": "accepted",
        "j2-detect-1": "accepted",
        "j2-extra": "rejected",
    }
