"""Answers to an operator's questions, through workflow queries.

``script.inspect`` prints them; each answer is a msgspec Struct so that
``--json`` prints the same thing a person reads. A query reaches a running
workflow's worker (or replays a closed one on a worker), so a worker must be
polling the queue; when none answers, the error says so.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import msgspec
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from actors import names, routing
from actors.rules.job import JobView
from actors.rules.proxy import ProxyView, job_key
from actors.rules.tenant import TenantState

# A query waits for a worker to answer it; past this, the operator is told.
QUERY_TIMEOUT = timedelta(seconds=10)


class InspectError(Exception):
    """A question with no answer: the message says why, for a person."""


class HeldEvents(msgspec.Struct, frozen=True, kw_only=True):
    """What the job's proxy holds for it (not yet delivered)."""

    shard: int
    event_ids: list[str]


class JobReport(msgspec.Struct, frozen=True, kw_only=True):
    """``inspect job``: the job's own view, and what its proxy still holds."""

    workflow_id: str
    # None: no event has reached the job yet, but its proxy holds some.
    job: JobView | None
    held: HeldEvents | None  # None: the proxy did not answer


class TenantReport(msgspec.Struct, frozen=True, kw_only=True):
    """``inspect tenant``: the current window's counts."""

    workflow_id: str
    tenant: TenantState


class ShardReport(msgspec.Struct, frozen=True, kw_only=True):
    """``inspect shards``: one row per shard; None where no proxy runs."""

    shard: int
    workflow_id: str
    proxy: ProxyView | None
    error: str | None = None


async def _query(
    client: Client, workflow_id: str, query: str, *args: object, result_type: type
) -> object:
    """One query; NOT_FOUND becomes ``LookupError``, every other failure an
    ``InspectError`` that says what happened."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await handle.query(
            query, *args, result_type=result_type, rpc_timeout=QUERY_TIMEOUT
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise LookupError(workflow_id) from None
        if exc.status == RPCStatusCode.DEADLINE_EXCEEDED:
            raise InspectError(
                f"{workflow_id}: no worker answered within "
                f"{QUERY_TIMEOUT.total_seconds():g}s (is script.worker running?)"
            ) from None
        raise InspectError(f"{workflow_id}: {exc.status.name}: {exc.message}") from None
    except WorkflowQueryFailedError as exc:
        raise InspectError(f"{workflow_id}: the query failed: {exc}") from None


async def _latest_generation(client: Client, tenant_id: str, job_id: str) -> str:
    """The workflow id of the job's latest run: a job that closed and was
    reopened by late events runs as generations (``routing.job_run_id``),
    each started only once the one before it closed."""
    generation = 0
    while True:
        later = routing.job_run_id(tenant_id, job_id, generation + 1)
        try:
            await client.get_workflow_handle(later).describe(rpc_timeout=QUERY_TIMEOUT)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return routing.job_run_id(tenant_id, job_id, generation)
            raise InspectError(f"{later}: {exc.status.name}: {exc.message}") from None
        generation += 1


async def job_report(
    client: Client, tenant_id: str, job_id: str, *, shards: int
) -> JobReport:
    """The job's status (its latest generation's), and the events its proxy
    still holds for it."""
    workflow_id = await _latest_generation(client, tenant_id, job_id)
    shard = routing.shard_of(tenant_id, job_id, shards)
    job_query = _query(client, workflow_id, names.JOB_STATUS, result_type=JobView)
    held_query = _query(
        client,
        routing.proxy_id(shard),
        names.PROXY_HELD,
        job_key(tenant_id, job_id),
        result_type=list[str],
    )
    job, held = await asyncio.gather(job_query, held_query, return_exceptions=True)
    held_events = (
        HeldEvents(shard=shard, event_ids=held) if isinstance(held, list) else None
    )
    if isinstance(job, LookupError):
        if held_events is not None and held_events.event_ids:
            # Its proxy holds events for it, none of which has reached it.
            return JobReport(workflow_id=workflow_id, job=None, held=held_events)
        raise InspectError(
            f"no job {tenant_id}/{job_id}: workflow {workflow_id} not found "
            "(no event for it has been delivered, or its id is misspelt)"
        )
    if isinstance(job, BaseException):
        raise job
    assert isinstance(job, JobView)
    return JobReport(workflow_id=workflow_id, job=job, held=held_events)


async def tenant_report(client: Client, tenant_id: str) -> TenantReport:
    workflow_id = routing.tenant_id_of(tenant_id)
    try:
        state = await _query(
            client, workflow_id, names.TENANT_STATE, result_type=TenantState
        )
    except LookupError:
        raise InspectError(
            f"no tenant {tenant_id}: workflow {workflow_id} not found (no job of "
            "it has published yet, or its id is misspelt)"
        ) from None
    assert isinstance(state, TenantState)
    return TenantReport(workflow_id=workflow_id, tenant=state)


class StuckJob(msgspec.Struct, frozen=True, kw_only=True):
    """An open job past its age limit, and what it still misses."""

    workflow_id: str
    started_at: datetime
    job: JobView | None  # None: it did not answer its query
    error: str | None = None


def stuck_query(older_than: timedelta, now: datetime, tenant: str | None) -> str:
    """The visibility query for open jobs started before ``now - older_than``.

    Jobs keep their status search attribute current (``actors.names``): open
    until their first result version is written.
    """
    cutoff = (now - older_than).isoformat().replace("+00:00", "Z")
    query = (
        f"WorkflowType = '{names.JOB}' AND ExecutionStatus = 'Running' "
        f"AND {names.STATUS_ATTRIBUTE} = '{names.JOB_OPEN}' "
        f"AND StartTime < '{cutoff}'"
    )
    if tenant is not None:
        escaped = tenant.replace("\\", "\\\\").replace("'", "\\'")
        query += f" AND {names.TENANT_ATTRIBUTE} = '{escaped}'"
    return query


async def stuck_jobs(
    client: Client,
    *,
    older_than: timedelta,
    now: datetime,
    tenant: str | None = None,
    limit: int = 100,
) -> list[StuckJob]:
    """Open jobs older than ``older_than`` (oldest first, at most ``limit``),
    each with its view: what it still misses."""
    found = [
        (execution.id, execution.start_time)
        async for execution in client.list_workflows(
            stuck_query(older_than, now, tenant), limit=limit
        )
    ]

    async def one(workflow_id: str, started_at: datetime) -> StuckJob:
        try:
            job = await _query(
                client, workflow_id, names.JOB_STATUS, result_type=JobView
            )
        except (LookupError, InspectError) as exc:
            return StuckJob(
                workflow_id=workflow_id,
                started_at=started_at,
                job=None,
                error=str(exc) or "closed meanwhile",
            )
        assert isinstance(job, JobView)
        return StuckJob(workflow_id=workflow_id, started_at=started_at, job=job)

    jobs = await asyncio.gather(*(one(wid, at) for wid, at in found))
    return sorted(jobs, key=lambda j: j.started_at)


class SinkBehind(msgspec.Struct, frozen=True, kw_only=True):
    """``inspect sinks``: a sink of a fan-out that still has records to take
    (it was down when the others took them), from its catch-up workflows."""

    sink: str
    batches: int
    records: int
    oldest_at: datetime
    attempts: int  # the most write attempts of any of its batches
    last_failure: str | None  # the latest attempt's error, when one failed


CATCH_UP_QUERY = (
    f"WorkflowType = '{names.SINK_CATCH_UP}' AND ExecutionStatus = 'Running'"
)


async def sinks_behind(client: Client, *, limit: int = 1000) -> list[SinkBehind]:
    """Each sink with catch-up workflows still running (at most ``limit``
    looked at), by name; an empty list when no sink is behind."""
    found = [
        execution
        async for execution in client.list_workflows(CATCH_UP_QUERY, limit=limit)
    ]

    async def pending(workflow_id: str) -> tuple[int, str | None]:
        try:
            described = await client.get_workflow_handle(workflow_id).describe()
        except RPCError:
            return 0, None  # finished meanwhile
        activities = described.raw_description.pending_activities
        if not activities:
            return 0, None
        activity = activities[0]
        failure = activity.last_failure.message or None
        return activity.attempt, failure

    described = await asyncio.gather(*(pending(e.id) for e in found))
    by_sink: dict[str, list[tuple[datetime, int, int, str | None]]] = {}
    for execution, (attempts, failure) in zip(found, described, strict=True):
        memo = await execution.memo()
        sink = str(memo.get(names.CATCH_UP_SINK, "?"))
        count = int(memo.get(names.CATCH_UP_COUNT, 0))
        by_sink.setdefault(sink, []).append(
            (execution.start_time, count, attempts, failure)
        )
    reports = []
    for sink, batches in sorted(by_sink.items()):
        latest = max(batches, key=lambda b: b[0])
        reports.append(
            SinkBehind(
                sink=sink,
                batches=len(batches),
                records=sum(b[1] for b in batches),
                oldest_at=min(b[0] for b in batches),
                attempts=max(b[2] for b in batches),
                last_failure=latest[3],
            )
        )
    return reports


def parse_age(text: str) -> timedelta:
    """``90s``, ``10m``, ``2h``, ``1d`` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise ValueError(
            f"expected an age like 90s, 10m, 2h or 1d, got {text!r}"
        ) from None
    if seconds < 0:
        raise ValueError(f"expected a non-negative age, got {text!r}")
    return timedelta(seconds=seconds)


async def shard_reports(client: Client, shards: int) -> list[ShardReport]:
    async def one(shard: int) -> ShardReport:
        workflow_id = routing.proxy_id(shard)
        try:
            proxy = await _query(
                client, workflow_id, names.PROXY_STATUS, result_type=ProxyView
            )
        except LookupError:
            return ShardReport(shard=shard, workflow_id=workflow_id, proxy=None)
        except InspectError as exc:
            return ShardReport(
                shard=shard, workflow_id=workflow_id, proxy=None, error=str(exc)
            )
        assert isinstance(proxy, ProxyView)
        return ShardReport(shard=shard, workflow_id=workflow_id, proxy=proxy)

    return list(await asyncio.gather(*(one(shard) for shard in range(shards))))


# --- Rendering for a person ----------------------------------------------------


def _ago(when: datetime, now: datetime) -> str:
    seconds = (now - when).total_seconds()
    return f"{_span(abs(seconds))} {'ago' if seconds >= 0 else 'from now'}"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render_job(report: JobReport, now: datetime) -> str:
    job = report.job
    if job is None:
        assert report.held is not None
        return (
            f"job {report.workflow_id.removeprefix('job/')}: not started yet; "
            f"proxy/{report.held.shard} holds {len(report.held.event_ids)} of its "
            "events (" + ", ".join(report.held.event_ids[:10]) + ")"
        )
    name = f"job {job.tenant_id}/{job.job_id}"
    if job.version == 0:
        waiting = "waiting for job.opened" if not job.opened else "waiting for parts"
        head = f"{name}: open, {'complete, publishing' if job.complete else waiting}"
    else:
        head = f"{name}: published version {job.version} ({job.last_status})"
    where = f"  workflow: {report.workflow_id}"
    if job.generation:
        where += f" (generation {job.generation}: reopened by late events)"
    lines = [head, where]
    lines.append(
        "  required: " + (", ".join(job.required) if job.required else "unknown")
    )
    for analysis_type, parts in job.parts.items():
        if parts.parts is None:
            lines.append(f"  {analysis_type}: no part received yet")
            continue
        text = f"  {analysis_type}: {len(parts.received)} of {parts.parts} parts"
        if parts.missing:
            text += " (missing " + ", ".join(map(str, parts.missing)) + ")"
        lines.append(text)
    lines.append(f"  events: {job.events} accepted, {job.refused} refused")
    if job.refusals_unwritten:
        lines.append(f"  refusals not yet dead-lettered: {job.refusals_unwritten}")
    lines.append(
        f"  first event: {job.first_seen.isoformat()} ({_ago(job.first_seen, now)})"
    )
    if job.version == 0:
        lines.append(
            f"  deadline: {job.deadline.isoformat()} ({_ago(job.deadline, now)})"
        )
    if job.closes_at is not None and job.closes_at == job.late_until:
        lines.append(
            f"  closes: {job.closes_at.isoformat()} ({_ago(job.closes_at, now)})"
        )
    elif job.late_until is not None:
        # It closed once published; a late event starts its next generation.
        lines.append(
            f"  late events: until {job.late_until.isoformat()} "
            f"({_ago(job.late_until, now)}), each reopening it"
        )
    if report.held is None:
        lines.append("  proxy: did not answer")
    elif report.held.event_ids:
        lines.append(
            f"  held in proxy/{report.held.shard}: {len(report.held.event_ids)} "
            "events not yet delivered ("
            + ", ".join(report.held.event_ids[:10])
            + (", ..." if len(report.held.event_ids) > 10 else "")
            + ")"
        )
    else:
        lines.append(f"  held in proxy/{report.held.shard}: nothing")
    return "\n".join(lines)


def render_tenant(report: TenantReport, now: datetime) -> str:
    state = report.tenant
    counts = state.counts
    lines = [f"tenant {state.tenant_id}", f"  workflow: {report.workflow_id}"]
    if state.window_start is None:
        lines.append("  no open window (nothing reported since the last summary)")
    else:
        lines.append(
            f"  window since {state.window_start.isoformat()} "
            f"({_ago(state.window_start, now)})"
        )
    lines += [
        f"  jobs completed {counts.jobs_completed}, timed out "
        f"{counts.jobs_timed_out}, amended {counts.jobs_amended}",
        f"  events {counts.events}, dead letters {counts.dead_letters}",
        f"  summaries written: {state.summaries}",
    ]
    for analysis_type, n in sorted(counts.analyses.items()):
        lines.append(f"  {analysis_type}: {n} results")
    return "\n".join(lines)


def render_stuck(jobs: list[StuckJob], older_than: timedelta, now: datetime) -> str:
    if not jobs:
        return f"no open job older than {_span(older_than.total_seconds())}"
    lines = [f"{len(jobs)} open jobs older than {_span(older_than.total_seconds())}:"]
    for stuck in jobs:
        head = f"  {stuck.workflow_id} (started {_ago(stuck.started_at, now)})"
        if stuck.job is None:
            lines.append(f"{head}: {stuck.error}")
            continue
        misses = []
        for analysis_type, parts in stuck.job.parts.items():
            if parts.parts is None:
                misses.append(f"{analysis_type} (no part yet)")
            elif parts.missing:
                misses.append(
                    f"{analysis_type} parts " + ",".join(map(str, parts.missing))
                )
        if not stuck.job.opened:
            misses.insert(0, "job.opened")
        lines.append(f"{head}: misses " + ("; ".join(misses) or "nothing"))
    return "\n".join(lines)


def render_shards(reports: list[ShardReport], now: datetime) -> str:
    lines = ["shard  held  jobs  oldest    in flight  state"]
    for r in reports:
        if r.proxy is None:
            lines.append(
                f"{r.shard:>5}  {'-':>4}  {'-':>4}  {'-':>8}  {'-':>9}  "
                + (r.error or "not running")
            )
            continue
        p = r.proxy
        oldest = (
            "-"
            if p.oldest_held_at is None
            else _span(max(0.0, (now - p.oldest_held_at).total_seconds()))
        )
        state = "retired" if p.retired else "draining" if p.draining else "open"
        lines.append(
            f"{r.shard:>5}  {p.held_events + p.held_rejections:>4}  "
            f"{p.held_jobs:>4}  {oldest:>8}  {p.deliveries_in_flight:>9}  {state}"
        )
    return "\n".join(lines)


def render_sinks(reports: list[SinkBehind], now: datetime) -> str:
    if not reports:
        return "no sink is behind: every sink holds what the others hold"
    lines = []
    for r in reports:
        lines.append(
            f"{r.sink}: {r.records} records in {r.batches} catch-up batches, "
            f"the oldest deferred {_ago(r.oldest_at, now)}; "
            f"up to {r.attempts} write attempts"
        )
        if r.last_failure:
            lines.append(f"  last error: {r.last_failure}")
    return "\n".join(lines)
