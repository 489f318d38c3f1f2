"""What ``script.inspect`` shows: the job's and the proxy's views, computed
from their state by pure functions, and how they read to a person."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from actors.rules import job as job_rules
from actors.rules import proxy as proxy_rules
from actors.rules.job import JobSettings, PartsView
from actors.rules.proxy import IngestBatch, ProxySettings, ProxyState
from runtime.inspect import (
    HeldEvents,
    JobReport,
    ShardReport,
    SinkBehind,
    parse_age,
    render_job,
    render_shards,
    render_sinks,
    stuck_query,
)
from wire.events import AnalysisResult, JobOpened

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = JobSettings(default_deadline_s=600.0, linger_s=300.0)


def opened(job: str = "j") -> JobOpened:
    return JobOpened(
        event_id=f"{job}-open",
        tenant_id="t",
        job_id=job,
        required=["detect", "caption"],
        at=T0,
    )


def part(
    n: int, parts: int = 3, job: str = "j", kind: str = "detect"
) -> AnalysisResult:
    return AnalysisResult(
        event_id=f"{job}-{kind}-{n}",
        tenant_id="t",
        job_id=job,
        analysis_type=kind,
        part=n,
        parts=parts,
        payload=b"{}",
        at=T0,
    )


def test_a_job_view_names_each_required_types_received_and_missing_parts() -> None:
    state = job_rules.new_job("t", "j", T0)
    job_rules.apply_batch(
        state, [opened(), part(0), part(2), part(0, kind="ocr", parts=1)]
    )
    view = job_rules.view(state, SETTINGS)
    assert view.parts == {
        "detect": PartsView(parts=3, received=[0, 2], missing=[1]),
        "caption": PartsView(parts=None, received=[], missing=[]),
    }
    assert (view.events, view.refused, view.refusals_unwritten) == (3, 1, 1)
    assert (view.opened, view.complete, view.version) == (True, False, 0)
    assert view.deadline == T0 + timedelta(seconds=600)
    assert view.closes_at is None


def test_a_job_view_before_job_opened_lists_the_types_seen() -> None:
    state = job_rules.new_job("t", "j", T0)
    job_rules.apply_batch(state, [part(1)])
    view = job_rules.view(state, SETTINGS)
    assert view.required is None
    assert view.parts == {"detect": PartsView(parts=3, received=[1], missing=[0, 2])}


def test_a_published_job_view_says_when_it_closes() -> None:
    state = job_rules.new_job("t", "j", T0)
    job_rules.apply_batch(
        state, [opened(), *(part(n, 2) for n in range(2)), part(0, 1, kind="caption")]
    )
    publication = job_rules.decide(state, T0, SETTINGS)
    assert publication is not None
    job_rules.commit(state, publication, T0 + timedelta(seconds=1))
    view = job_rules.view(state, SETTINGS)
    assert (view.version, view.last_status, view.complete) == (1, "complete", True)
    assert view.closes_at == T0 + timedelta(seconds=301)


def test_a_reopened_job_reads_as_its_generation_and_how_long_it_takes_late_events() -> (
    None
):
    settings = JobSettings(default_deadline_s=600.0, linger_s=300.0, reopen=True)
    closed = job_rules.new_job("t", "j", T0)
    job_rules.apply_batch(closed, [opened(), *(part(n, 2) for n in range(2))])
    publication = job_rules.decide(closed, T0 + timedelta(seconds=600), settings)
    assert publication is not None
    job_rules.commit(closed, publication, T0 + timedelta(seconds=600))
    late = T0 + timedelta(seconds=700)
    state = job_rules.reopened(
        closed,
        [part(0, 1, kind="caption")],
        delivery_id="d",
        at=late,
        settings=settings,
    )
    view = job_rules.view(state, settings)
    assert (view.version, view.last_status, view.generation) == (2, "amended", 1)
    assert view.closes_at == late  # closed once published
    assert view.late_until == late + timedelta(seconds=300)
    text = render_job(
        JobReport(workflow_id="job/t/j/1", job=view, held=None),
        late + timedelta(seconds=60),
    )
    assert "job t/j: published version 2 (amended)" in text
    assert "workflow: job/t/j/1 (generation 1: reopened by late events)" in text
    assert "late events: until " in text
    assert "closes:" not in text


def test_a_proxy_view_counts_what_it_holds_and_since_when() -> None:
    state = ProxyState()
    settings = ProxySettings(shard=3, shards=4)
    proxy_rules.ingest(state, IngestBatch(events=[part(0), part(1)]), settings, now=T0)
    later = T0 + timedelta(seconds=2)
    proxy_rules.ingest(
        state, IngestBatch(events=[part(0, job="k")]), settings, now=later
    )
    view = proxy_rules.view(
        state,
        settings,
        deliveries_in_flight=1,
        events_in_flight=7,
        draining=False,
        retired=False,
    )
    assert (view.shard, view.held_events, view.held_jobs) == (3, 3, 2)
    assert view.oldest_held_at == T0
    assert (view.deliveries_in_flight, view.events_in_flight) == (1, 7)
    assert proxy_rules.held_for(state, "t/j") == ["j-detect-0", "j-detect-1"]
    assert proxy_rules.held_for(state, "t/unknown") == []


def test_a_job_reads_as_what_it_waits_for() -> None:
    state = job_rules.new_job("t", "j", T0)
    job_rules.apply_batch(state, [opened(), part(0)])
    report = JobReport(
        workflow_id="job/t/j",
        job=job_rules.view(state, SETTINGS),
        held=HeldEvents(shard=1, event_ids=["j-detect-2"]),
    )
    text = render_job(report, T0 + timedelta(seconds=30))
    assert "job t/j: open, waiting for parts" in text
    assert "detect: 1 of 3 parts (missing 1, 2)" in text
    assert "caption: no part received yet" in text
    assert "held in proxy/1: 1 events not yet delivered (j-detect-2)" in text


def test_a_shard_without_a_proxy_reads_as_not_running() -> None:
    text = render_shards([ShardReport(shard=0, workflow_id="proxy/0", proxy=None)], T0)
    assert text.splitlines()[1].split()[-2:] == ["not", "running"]


def test_ages_read_in_seconds_minutes_hours_and_days() -> None:
    assert [parse_age(t) for t in ("90s", "10m", "2h", "1d", "5")] == [
        timedelta(seconds=90),
        timedelta(minutes=10),
        timedelta(hours=2),
        timedelta(days=1),
        timedelta(seconds=5),
    ]
    with pytest.raises(ValueError, match="an age like 90s"):
        parse_age("ten minutes")


def test_the_stuck_query_asks_for_old_open_jobs_and_quotes_the_tenant() -> None:
    query = stuck_query(timedelta(minutes=10), T0, "o'brien")
    assert "WorkflowType = 'Job'" in query
    assert "EventflowJobStatus = 'open'" in query
    assert "StartTime < '2025-12-31T23:50:00Z'" in query
    assert query.endswith("EventflowTenant = 'o\\'brien'")


def test_sinks_behind_read_as_records_waiting_and_the_last_error() -> None:
    behind = SinkBehind(
        sink="postgresql://u:***@db/x",
        batches=3,
        records=250,
        oldest_at=T0 - timedelta(seconds=42),
        attempts=5,
        last_failure="ConnectionRefusedError: [Errno 111] Connect call failed",
    )
    text = render_sinks([behind], T0)
    assert text.splitlines() == [
        "postgresql://u:***@db/x: 250 records in 3 catch-up batches, the oldest "
        "deferred 42.0s ago; up to 5 write attempts",
        "  last error: ConnectionRefusedError: [Errno 111] Connect call failed",
    ]
    assert render_sinks([], T0).startswith("no sink is behind")
