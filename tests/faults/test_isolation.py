"""Scenario 9: one tenant's events can never reach, read or change another
tenant's job or rollup, whatever ids they carry.

A victim tenant, an innocent second tenant and a hostile one use the same
job ids and the same event ids. The hostile tenant also sends events whose
ids try to reach the victim's jobs: ids with '/', '..', the victim's
workflow id as a job id, lookalike tenant ids (zero-width and trailing
spaces, case, Cyrillic and fullwidth letters, slash lookalikes), control
characters, and (through a client that skips the edge's validation) forged
ids straight into a proxy. Everything is sent one event per batch, so that
the victim's batches look exactly like the hostile's.

The victim's results must be what a run with only the victim's events
yields, its rollup must count only its own jobs and events, the hostile
events must land in the hostile tenants' own jobs or be dead-lettered with a
reason, and every workflow that exists must belong to a tenant that sent it.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from temporalio.client import Client, WorkflowUpdateFailedError

from actors import routing
from actors.job import JobWorkflow
from actors.rules.proxy import IngestBatch
from ingress.sender import send_batch
from tests.support.audit import audit
from tests.support.faults import Row, all_landed, jobs, report, settle, write_events
from tests.support.processes import run_script
from tests.support.records import file_progress, file_records
from tests.support.temporal import address_of
from wire import AnalysisResult, Rejection, parse_event
from wire.synthetic import Expected

SHARDS = 4
VICTIM = "acme"
BYSTANDER = "globex"  # innocent: the victim's job ids and event ids too
HOSTILE = "evil"
TYPES = ("detect", "caption")
PARTS = 2
AT = "2026-01-01T00:00:00+00:00"
# Everything lands within seconds; a lost event would leave a job waiting.
LIMIT_S = 120

# Tenant ids that look like the victim's, or like a path, but are other
# tenants: whoever sends them gets tenants of their own.
LOOKALIKE_TENANTS = (
    "acme\u200b",  # zero-width space
    "\u200bacme",
    "acme\ufeff",  # zero-width no-break space (BOM)
    "acme ",
    " acme",
    "acme\u00a0",  # no-break space
    "ACME",
    "Acme",
    "\u0430cme",  # Cyrillic a
    "\uff41\uff43\uff4d\uff45",  # fullwidth
    "acme\u202e",  # right-to-left override
    "acme\u2215",  # division slash
    "acme\uff0f",  # fullwidth solidus
    "acme%2F",
    "acme\\",
    "acme.",
    "..",
    ".",
    "job",
    "tenant",
    "proxy",
    "a" * 128,  # the longest id there is
)
# Job ids of the hostile tenant that spell a path to the victim's job with
# characters that are not '/'.
LOOKALIKE_JOBS = (
    "..",
    ".",
    "acme\u2215j",
    "..\uff0facme\uff0fj",
    "job%2Facme%2Fj",
    "job\\acme\\j",
    "j\u200b",
)
# Ids the edge must refuse: each becomes a dead letter with its reason.
REFUSED_IDS = (
    {"job_id": "acme/J"},
    {"job_id": "../acme/J"},
    {"job_id": "job/acme/J"},  # the victim's workflow id
    {"job_id": "J/"},
    {"job_id": "/J"},
    {"job_id": "J\x00"},
    {"job_id": "J\n"},
    {"job_id": ""},
    {"job_id": "j" * 129},
    {"job_id": 7},
    {"tenant_id": "evil/../acme"},
    {"tenant_id": "acme/"},
    {"tenant_id": "../acme"},
    {"tenant_id": "tenant/acme"},
    {"tenant_id": "job/acme"},
    {"tenant_id": "acme\x00"},
    {"tenant_id": "acme\t"},
    {"tenant_id": "acme\r\n"},
    {"tenant_id": "acme\x1b[0m"},
    {"tenant_id": "acme\x7f"},
    {"tenant_id": "acme\x85"},  # C1 next line
    {"tenant_id": "acme\u2028"},  # line separator
    {"tenant_id": "acme\u2029"},
    {"tenant_id": ""},
    {"tenant_id": None},
    {"event_id": "acme/J/J.opened"},  # shaped like the victim's refusal ids
    {"event_id": "J.detect.0\x00"},
)


def pick_jobs() -> list[str]:
    """Job ids shared by all three tenants: half of them on the same shard
    for all three (so their events meet in one proxy), half on three
    different shards."""
    names = [f"j{n}" for n in range(1000)]
    tenants = (VICTIM, BYSTANDER, HOSTILE)

    def shards(job: str) -> set[int]:
        return {routing.shard_of(t, job, SHARDS) for t in tenants}

    together = [j for j in names if len(shards(j)) == 1]
    apart = [j for j in names if len(shards(j)) == 3]
    half = jobs(4, 40)
    return together[:half] + apart[:half]


def event_id(job: str, kind: str) -> str:
    # The same ids in every tenant: ids need only be unique per job.
    return f"{job}.{kind}"


def line(**fields: object) -> bytes:
    return msgspec.json.encode(fields)


def job_lines(tenant: str, job: str) -> tuple[list[bytes], dict[str, list[bytes]]]:
    """A complete job: its events, and its payloads per type and part."""
    lines = [
        line(
            type="job.opened",
            event_id=event_id(job, "opened"),
            tenant_id=tenant,
            job_id=job,
            required=list(TYPES),
            at=AT,
        )
    ]
    payloads: dict[str, list[bytes]] = {}
    for analysis_type in TYPES:
        for part in range(PARTS):
            payload = msgspec.json.encode(
                {
                    "owner": tenant,
                    "job": job,
                    "label": f"{analysis_type} {part} of {tenant}'s {job}",
                }
            )
            payloads.setdefault(analysis_type, []).append(payload)
            lines.append(
                line(
                    type="analysis.result",
                    event_id=event_id(job, f"{analysis_type}.{part}"),
                    tenant_id=tenant,
                    job_id=job,
                    analysis_type=analysis_type,
                    part=part,
                    parts=PARTS,
                    payload=msgspec.Raw(payload),
                    at=AT,
                )
            )
    return lines, payloads


def workload(
    jobs_of: dict[str, list[str]],
) -> tuple[list[bytes], Expected]:
    lines: list[bytes] = []
    expected = Expected()
    for tenant, names in jobs_of.items():
        for job in names:
            more, payloads = job_lines(tenant, job)
            lines += more
            expected.payloads[f"{tenant}/{job}"] = payloads
    return lines, expected


def refused_at_edge(victim_job: str) -> list[bytes]:
    lines = []
    for n, ids in enumerate(REFUSED_IDS):
        fields = {
            "type": "analysis.result",
            "event_id": event_id(victim_job, f"detect.{n % PARTS}"),
            "tenant_id": HOSTILE,
            "job_id": victim_job,
            "analysis_type": "detect",
            "part": n % PARTS,
            "parts": PARTS,
            "payload": {"owner": HOSTILE, "attack": n},
            "at": AT,
        }
        for key, value in ids.items():
            fields[key] = (
                value.replace("J", victim_job) if isinstance(value, str) else value
            )
        lines.append(line(**fields))
    return lines


def refused_by_jobs(hostile_job: str) -> list[bytes]:
    """Well-formed events the hostile tenant's own job must refuse (sent once
    that job is complete): a conflicting part, an unrequested type, a
    disagreeing part count. They reuse the victim's event ids' shape."""
    common = {
        "type": "analysis.result",
        "tenant_id": HOSTILE,
        "job_id": hostile_job,
        "part": 0,
        "payload": {"owner": HOSTILE},
        "at": AT,
    }
    return [
        line(
            **common,
            event_id=event_id(hostile_job, "detect.0.again"),
            analysis_type="detect",
            parts=PARTS,
        ),
        line(
            **common,
            event_id=event_id(hostile_job, "ocr.0"),
            analysis_type="ocr",
            parts=PARTS,
        ),
        line(
            **common,
            event_id=event_id(hostile_job, "caption.0.more"),
            analysis_type="caption",
            parts=PARTS + 1,
        ),
    ]


def emit(address: str, directory: Path, name: str, lines: list[bytes]) -> dict:
    """Send ``lines`` with script.emit, one event per batch (so that two
    tenants' batches can be identical but for their tenant and job ids)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = write_events(directory, lines).rename(directory / f"{name}.jsonl")
    done = run_script(
        "script.emit",
        "--file",
        str(path),
        "--json",
        "--shards",
        str(SHARDS),
        "--batch-size",
        "1",
        address=address,
    )
    return msgspec.json.decode(done.stdout)


def worker_args(out: Path) -> list[str]:
    return ["--shards", str(SHARDS), "--sink", f"file:{out}", "--summary-interval", "1"]


def victim_view(records: list[dict]) -> tuple[list[bytes], dict[str, object]]:
    """The victim's result records (without the time they were written), as
    bytes, and the sum of its tenant summaries."""
    results = sorted(
        (
            {k: v for k, v in r.items() if k != "completed_at"}
            for r in records
            if r["type"] == "job.result" and r["tenant_id"] == VICTIM
        ),
        key=lambda r: r["result_id"],
    )
    totals: Counter[str] = Counter()
    analyses: Counter[str] = Counter()
    for s in records:
        if s["type"] == "tenant.summary" and s["tenant_id"] == VICTIM:
            for key in (
                "jobs_completed",
                "jobs_timed_out",
                "jobs_amended",
                "events",
                "dead_letters",
            ):
                totals[key] += s[key]
            analyses.update(s["analyses"])
    return [msgspec.json.encode(r) for r in results], {
        **totals,
        "analyses": dict(analyses),
    }


async def forged_batch_is_refused(client: Client, victim_job: str) -> int:
    """A client that skips the edge sends ids the edge would refuse straight
    to the victim's job's proxy. The proxy refuses the update (its input
    does not decode), so nothing of it is kept. Returns how many were sent."""
    forged = [
        AnalysisResult(
            event_id=event_id(victim_job, "detect.0"),
            tenant_id=tenant,
            job_id=job,
            analysis_type="detect",
            part=0,
            parts=PARTS,
            payload=b'{"owner":"evil","forged":true}',
            at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for tenant, job in (
            (f"{VICTIM}/x", victim_job),
            (HOSTILE, f"{VICTIM}/{victim_job}"),
            (HOSTILE, f"job/{VICTIM}/{victim_job}"),
            (f"{VICTIM}\x00", victim_job),
        )
    ]
    shard = routing.shard_of(VICTIM, victim_job, SHARDS)
    for event in forged:
        with pytest.raises(WorkflowUpdateFailedError):
            await send_batch(client, shard, SHARDS, IngestBatch(events=[event]))
    return len(forged)


async def test_no_tenant_reaches_reads_or_changes_another_tenants_jobs(
    temporal, file_dev_server, worker_process, tmp_path: Path
) -> None:
    job_ids = pick_jobs()
    victim_lines, victim_expected = workload({VICTIM: job_ids})

    # The reference: a run with only the victim's events, on its own server.
    alone = tmp_path / "alone"
    worker_process(file_dev_server.address, worker_args(alone))
    emit(file_dev_server.address, tmp_path / "events-alone", "victim", victim_lines)
    await settle(
        lambda: file_progress(alone), all_landed(victim_expected), limit_s=LIMIT_S
    )
    reference = victim_view(file_records(alone))
    assert len(reference[0]) == len(job_ids)

    # The shared run: bystander and hostile first, then the victim, then the
    # hostile again once the victim's results are written.
    hostile_jobs = {
        BYSTANDER: job_ids,
        HOSTILE: job_ids + list(LOOKALIKE_JOBS),
        **{tenant: job_ids[:1] for tenant in LOOKALIKE_TENANTS},
    }
    others, expected = workload(hostile_jobs)
    edge = refused_at_edge(job_ids[0]) + refused_at_edge(job_ids[-1])
    late = [x for job in job_ids for x in refused_by_jobs(job)]
    for raw in edge:
        assert isinstance(parse_event(raw), Rejection), raw
    for raw in others + late:
        assert not isinstance(parse_event(raw), Rejection), raw
    expected.payloads.update(victim_expected.payloads)
    expected.dead_letters = len(set(edge)) + len(late)

    out = tmp_path / "out"
    address = address_of(temporal)
    worker_process(address, worker_args(out))
    events = tmp_path / "events"
    before = emit(address, events, "before", others + edge)
    assert before["accepted"] == len(others), before
    assert before["rejected"] == len(edge), before
    forged = await forged_batch_is_refused(temporal.client, job_ids[0])
    victim = emit(address, events, "victim", victim_lines)
    # Not one of the victim's events is taken for another tenant's, though
    # every event id was used by two tenants before, on the same proxy for
    # half the jobs, in batches that differ only in tenant and job ids.
    assert victim == {
        "sent": len(victim_lines),
        "accepted": len(victim_lines),
        "duplicates": 0,
        "rejected": 0,
    }
    await settle(
        lambda: file_progress(out),
        lambda p: p.results >= len(expected.payloads),
        limit_s=LIMIT_S,
        settle_s=0,
    )
    after = emit(address, events, "after", others + edge + late)
    sent = time.monotonic()
    assert after["rejected"] == len(edge), after
    landed = await settle(
        lambda: file_progress(out), all_landed(expected), limit_s=LIMIT_S
    )

    records = file_records(out)
    result = audit(records, expected)
    events_sent = 2 * len(others + edge) + len(late) + len(victim_lines) + forged
    report(
        Row.of(
            "9. tenant isolation",
            result,
            events_sent=events_sent,
            faults=(
                f"{len(hostile_jobs) - 1} hostile tenants (the victim's job and "
                f"event ids, {len(LOOKALIKE_TENANTS)} lookalike tenant ids, "
                f"{len(LOOKALIKE_JOBS)} path-like job ids), {len(set(edge))} "
                f"refused ids ('/', '..', control characters), {len(late)} "
                f"events for jobs to refuse, {forged} forged batches past the "
                "edge; recovery = last event sent to last record"
            ),
            recovery_s=max(0.0, landed - sent),
        )
    )
    assert result.clean, result.problems()

    # The victim's results and rollup are exactly those of the run alone.
    shared = victim_view(records)
    assert shared[0] == reference[0]
    assert shared[1] == reference[1]
    assert shared[1] == {
        "jobs_completed": len(job_ids),
        "jobs_timed_out": 0,
        "jobs_amended": 0,
        "events": len(victim_lines),
        "dead_letters": 0,
        "analyses": {t: PARTS * len(job_ids) for t in TYPES},
    }
    # Byte for byte: the victim's payloads, as the victim sent them.
    result_lines = (out / "job.result.jsonl").read_bytes().splitlines()
    for key, payloads in victim_expected.payloads.items():
        job = key.split("/", 1)[1]
        (mine,) = [
            x
            for x in result_lines
            if msgspec.json.decode(x)["result_id"] == f"{VICTIM}/{job}/1"
        ]
        for payload in (p for ps in payloads.values() for p in ps):
            assert payload in mine
            assert b'"owner":"acme"' in payload
        assert HOSTILE.encode() not in mine
    # Every other result belongs to the tenant that sent its events.
    for r in records:
        if r["type"] == "job.result":
            for analysis in r["analyses"].values():
                for payload in analysis["payloads"]:
                    assert payload["owner"] == r["tenant_id"]
    # Hostile events were dead-lettered with a reason, never as the victim's.
    dead = [r for r in records if r["type"] == "dead_letter"]
    assert all(d["reason"] for d in dead)
    assert not [d for d in dead if d["tenant_id"] == VICTIM]
    assert Counter(d["source"] for d in dead) == {
        "edge": len(set(edge)),
        "job": len(late),
    }
    for d in dead:
        if d["source"] == "job":
            assert d["tenant_id"] == HOSTILE
            assert d["dead_letter_id"].startswith(f"{HOSTILE}/")
    owners = {**hostile_jobs, VICTIM: job_ids}
    summarized = {r["tenant_id"] for r in records if r["type"] == "tenant.summary"}
    assert summarized == set(owners)

    # Every workflow belongs to a tenant that sent it.
    pairs = {(t, j) for t, names in owners.items() for j in names}
    seen: Counter[str] = Counter()
    jobs_seen: set[tuple[str, str]] = set()
    async for execution in temporal.client.list_workflows():
        kind, _, rest = execution.id.partition("/")
        seen[kind] += 1
        if kind == "proxy":
            assert rest in {str(n) for n in range(SHARDS)}, execution.id
        elif kind == "tenant":
            assert rest in owners, execution.id
        else:
            # A closed job reopened by a late event runs a next generation:
            # it is the same job.
            run = routing.job_of_run_id(execution.id)
            assert run is not None, execution.id
            assert run[:2] in pairs, execution.id
            jobs_seen.add(run[:2])
    assert set(seen) == {"proxy", "tenant", "job"}
    assert (seen["proxy"], seen["tenant"]) == (SHARDS, len(owners))
    assert jobs_seen == pairs  # each job in one run or more (its generations)
    # The victim's jobs hold the victim's events and nothing else.
    for job in job_ids:
        state = await temporal.client.get_workflow_handle(
            routing.job_id_of(VICTIM, job)
        ).query(JobWorkflow.state)
        assert (state.tenant_id, state.job_id) == (VICTIM, job)
        assert state.outcomes == {
            msgspec.json.decode(x)["event_id"]: "accepted"
            for x in victim_lines
            if msgspec.json.decode(x)["job_id"] == job
        }
        assert not state.refusals
        for slot in state.slots.values():
            for event in slot.events:
                assert event is not None
                assert event.tenant_id == VICTIM
                assert msgspec.json.decode(event.payload)["owner"] == VICTIM
