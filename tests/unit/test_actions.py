"""Billable Temporal Cloud actions counted from histories (``bench.actions``):
the committed histories, counted by hand, and hand-built ones for what the
project's workflows never do."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import History, HistoryEvent
from temporalio.client import WorkflowExecutionStatus, WorkflowHistory

from bench.actions import Actions, classify, count_namespace

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
E = EventType


def recorded(name: str) -> WorkflowHistory:
    path = HISTORIES / name
    return WorkflowHistory.from_json(path.stem, path.read_text())


# Read off the files: event types counted, markers grouped by their
# workflow_task_completed_event_id, heartbeat timeouts on the schedules.
HAND_COUNTED = {
    "v2/job-01.json": {
        "workflow_started": 1,
        "update_accepted": 2,
        "timer_started": 3,
        "activity_scheduled": 1,
        "search_attributes_upserted": 2,
    },
    "v2/job-02.json": {
        "workflow_started": 1,
        "update_accepted": 1,
        "timer_started": 1,
        "search_attributes_upserted": 1,
    },
    # core_patch and core_local_activity markers in one task: one action;
    # the TemporalChangeVersion upsert is exempt; two deliveries heartbeat
    # (10 s timeout; each ran well under 8 s), the report does not.
    "v2/proxy-01.json": {
        "workflow_started": 1,
        "markers": 1,
        "update_accepted": 2,
        "timer_started": 2,
        "activity_scheduled": 3,
        "activity_heartbeat_estimate": 2,
    },
    # Continued as new: its CONTINUED_AS_NEW is billed as the next run's start.
    "v2/proxy-03.json": {
        "workflow_started": 1,
        "markers": 1,
        "update_accepted": 7,
        "timer_started": 4,
        "activity_scheduled": 7,
        "activity_heartbeat_estimate": 6,
    },
    "v1/proxy-01.json": {
        "workflow_started": 1,
        "markers": 1,
        "update_accepted": 2,
        "timer_started": 2,
        "activity_scheduled": 3,
        "activity_heartbeat_estimate": 2,
    },
    "v2/tenant-03.json": {
        "workflow_started": 1,
        "update_accepted": 1,
        "timer_started": 1,
        "activity_scheduled": 1,
    },
    "v2/tenant-01.json": {"workflow_started": 1},
}


@pytest.mark.parametrize("name", sorted(HAND_COUNTED))
def test_recorded_histories_count_as_read_by_hand(name: str) -> None:
    assert dict(classify(recorded(name))) == HAND_COUNTED[name]


@pytest.mark.parametrize(
    "path",
    sorted(HISTORIES.glob("v*/*.json")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_every_recorded_history_bills_its_messages_timers_and_activities(
    path: Path,
) -> None:
    history = recorded(f"{path.parent.name}/{path.name}")
    types = Counter(e.event_type for e in history.events)
    counts = classify(history)
    assert counts["workflow_started"] == 1
    assert (
        counts["update_accepted"]
        == types[E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED]
    )
    assert counts["timer_started"] == types[E.EVENT_TYPE_TIMER_STARTED]
    assert counts["activity_scheduled"] == types[E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert counts["markers"] == (1 if types[E.EVENT_TYPE_MARKER_RECORDED] else 0)
    # Retries show as later attempts (v3's catch-ups were recorded with a
    # sink failing its first writes; nothing else was).
    retries = sum(
        e.activity_task_started_event_attributes.attempt - 1
        for e in history.events
        if e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_STARTED
    )
    assert counts["activity_retry"] == retries
    if not path.name.startswith("sinkcatchup-"):
        assert retries == 0


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("v2/job-*.json")), ids=str)
def test_a_lingering_job_closes_without_another_action(path: Path) -> None:
    """What bench.run counts right after a run (jobs still in their linger
    timer) is what the job costs in all: the close is not billed."""
    history = recorded(f"v2/{path.name}")
    events = list(history.events)
    assert events[-1].event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    last_fired = max(
        i for i, e in enumerate(events) if e.event_type == E.EVENT_TYPE_TIMER_FIRED
    )
    before_close = History(events=events[:last_fired])
    assert classify(before_close) == classify(history)


def event(event_id: int, kind: int, **attributes: object) -> HistoryEvent:
    e = HistoryEvent(event_id=event_id, event_type=kind, **attributes)  # type: ignore[arg-type]
    e.event_time.FromSeconds(1_000_000 + event_id)
    return e


def started(event_id: int = 1, **search: str) -> HistoryEvent:
    e = event(event_id, E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
    fields = (
        e.workflow_execution_started_event_attributes.search_attributes.indexed_fields
    )
    for key, value in search.items():
        fields[key].CopyFrom(Payload(data=value.encode()))
    return e


def activity(
    scheduled_id: int, *, attempt: int, ran_s: float, heartbeat_s: float
) -> list[HistoryEvent]:
    scheduled = event(scheduled_id, E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    scheduled.activity_task_scheduled_event_attributes.heartbeat_timeout.FromTimedelta(
        timedelta(seconds=heartbeat_s)
    )
    start = event(scheduled_id + 1, E.EVENT_TYPE_ACTIVITY_TASK_STARTED)
    start.activity_task_started_event_attributes.scheduled_event_id = scheduled_id
    start.activity_task_started_event_attributes.attempt = attempt
    done = event(scheduled_id + 2, E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    done.activity_task_completed_event_attributes.scheduled_event_id = scheduled_id
    done.event_time.FromSeconds(start.event_time.seconds + int(ran_s))
    return [scheduled, start, done]


def test_each_retry_of_an_activity_is_an_action() -> None:
    counts = classify(
        History(events=[started(), *activity(5, attempt=3, ran_s=0, heartbeat_s=0)])
    )
    assert counts == Counter(workflow_started=1, activity_scheduled=1, activity_retry=2)


def test_heartbeats_are_estimated_per_attempt_and_per_throttle_interval() -> None:
    # Two attempts that each heartbeat as they start; the last ran 20 s with
    # a 10 s timeout, so two more (one every 8 s) reached the server.
    counts = classify(History(events=activity(5, attempt=2, ran_s=20, heartbeat_s=10)))
    assert counts["activity_heartbeat_estimate"] == 4


def test_local_activities_cost_one_action_per_task_plus_their_retries() -> None:
    done_4 = event(4, E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    meta = done_4.workflow_task_completed_event_attributes.metering_metadata
    meta.nonfirst_local_activity_execution_attempts = 3
    markers = []
    for event_id, task in ((5, 4), (6, 4), (7, 4), (11, 10)):
        m = event(event_id, E.EVENT_TYPE_MARKER_RECORDED)
        m.marker_recorded_event_attributes.workflow_task_completed_event_id = task
        markers.append(m)
    counts = classify(History(events=[started(), done_4, *markers]))
    assert counts == Counter(workflow_started=1, markers=2, local_activity_retry=3)


def test_signal_with_start_is_one_action_and_later_signals_one_each() -> None:
    history = History(
        events=[
            started(),
            event(2, E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED),
            event(3, E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED),
            event(9, E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED),
            event(10, E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED),
        ]
    )
    assert classify(history) == Counter(workflow_started=1, signal=1)


def test_search_attribute_upserts_count_except_for_patch_versions() -> None:
    def upsert(event_id: int, *keys: str) -> HistoryEvent:
        e = event(event_id, E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES)
        attrs = e.upsert_workflow_search_attributes_event_attributes
        fields = attrs.search_attributes.indexed_fields
        for key in keys:
            fields[key].CopyFrom(Payload(data=b"x"))
        return e

    history = History(
        events=[
            upsert(5, "TemporalChangeVersion"),
            upsert(6, "EventflowJobStatus", "EventflowTenant"),
            upsert(7, "TemporalChangeVersion", "EventflowJobStatus"),
        ]
    )
    assert classify(history) == Counter(search_attributes_upserted=2)


def test_continue_as_new_counts_nothing_in_the_old_run() -> None:
    history = History(
        events=[started(), event(5, E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW)]
    )
    assert classify(history) == Counter(workflow_started=1)


def test_children_resets_schedules_and_nexus() -> None:
    failed = event(6, E.EVENT_TYPE_WORKFLOW_TASK_FAILED)
    failed.workflow_task_failed_event_attributes.cause = (
        WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW
    )
    other_failure = event(7, E.EVENT_TYPE_WORKFLOW_TASK_FAILED)
    history = History(
        events=[
            started(TemporalScheduledById="s"),
            event(5, E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED),
            failed,
            other_failure,
            event(8, E.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED),
            event(9, E.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED),
        ]
    )
    assert classify(history) == Counter(
        workflow_started=1,
        schedule=2,
        child_workflow_initiated=1,
        workflow_reset=1,
        nexus=1,
        workflow_options_updated=1,
    )


def test_figures_per_thousand_events_and_per_month_at_20k() -> None:
    totals = Actions()
    totals.add("Job", Counter(workflow_started=300, update_accepted=200), open_=True)
    totals.add("Proxy", Counter(activity_scheduled=100), open_=False)
    figures = totals.figures(events=2000)
    assert figures["actions"] == 600
    assert figures["actions_per_1000_events"] == 300.0
    # 0.3 actions an event, 20,000 events a minute, 30 days
    assert figures["actions_per_month_at_20k"] == round(0.3 * 20_000 * 60 * 24 * 30)
    assert figures["actions_by_type"] == {"Job": 500, "Proxy": 100}
    assert figures["action_open_runs"] == {"Job": 1}


@dataclass
class FakeHandle:
    history: WorkflowHistory

    async def fetch_history(self) -> WorkflowHistory:
        await asyncio.sleep(0)
        return self.history


class FakeClient:
    """Lists two runs of a continued-as-new proxy and one closed job."""

    runs = {
        ("proxy/0", "r1"): (
            "Proxy",
            "v2/proxy-03.json",
            WorkflowExecutionStatus.CONTINUED_AS_NEW,
        ),
        ("proxy/0", "r2"): (
            "Proxy",
            "v2/proxy-01.json",
            WorkflowExecutionStatus.RUNNING,
        ),
        ("job/acme/j2", "r3"): (
            "Job",
            "v2/job-02.json",
            WorkflowExecutionStatus.COMPLETED,
        ),
    }

    async def list_workflows(self):  # type: ignore[no-untyped-def]
        for (wid, run_id), (wf_type, _, status) in self.runs.items():
            yield SimpleNamespace(
                id=wid, run_id=run_id, workflow_type=wf_type, status=status
            )

    def get_workflow_handle(self, workflow_id: str, *, run_id: str) -> FakeHandle:
        return FakeHandle(recorded(self.runs[(workflow_id, run_id)][1]))


def test_a_namespace_is_every_run_summed_by_type_and_kind() -> None:
    totals = asyncio.run(count_namespace(FakeClient(), concurrency=2))  # type: ignore[arg-type]
    assert totals.runs == 3
    assert totals.by_type == Counter(Proxy=26 + 11, Job=4)
    assert totals.total == 41
    assert totals.by_kind["workflow_started"] == 3
    assert totals.open_by_type == Counter(Proxy=1)
