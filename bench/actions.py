"""What a run costs on Temporal Cloud, in billable actions, read from histories.

The definition is Temporal Cloud's "Temporal Cloud Actions" page,
https://docs.temporal.io/cloud/actions (source
``temporalio/documentation: docs/evaluate/cloud/actions.mdx``, read
2026-12-02). Per history event, as that page maps action types to events:

* ``workflow_started``: every ``WORKFLOW_EXECUTION_STARTED``. That covers a
  client start, the start half of update-with-start (multi-operation), the new
  run of a continue-as-new (billed on the new run's start, not on the old
  run's ``CONTINUED_AS_NEW``, so that event counts nothing) and a child's
  start. A de-duplicated start (update-with-start to a running workflow, the
  ``USE_EXISTING`` policy) writes no start and is not billed.
* ``child_workflow_initiated``: ``START_CHILD_WORKFLOW_EXECUTION_INITIATED``
  (the intent; the attempt is the child's own start, in its own history).
* ``search_attributes_upserted``: ``UPSERT_WORKFLOW_SEARCH_ATTRIBUTES``, one
  per command whatever it sets, except one that sets only
  ``TemporalChangeVersion`` (``workflow.patched`` writes those; exempt).
* ``workflow_options_updated``: ``WORKFLOW_EXECUTION_OPTIONS_UPDATED``.
* ``workflow_reset``: ``WORKFLOW_TASK_FAILED`` with cause ``RESET_WORKFLOW``.
* ``activity_scheduled``: ``ACTIVITY_TASK_SCHEDULED``; ``activity_retry``:
  ``ACTIVITY_TASK_STARTED.attempt - 1`` (each retry is an action; only the
  last attempt's start is written, with the attempt count).
* ``markers``: all ``MARKER_RECORDED`` of one workflow task count as one
  action (the page: "Temporal Cloud counts all RecordMarkers from each
  Workflow Task as one action"; local activities are billed this way). Read
  literally this includes ``workflow.patched``'s ``core_patch`` marker; in
  this project it always shares its task with the proxy's local activity.
  ``local_activity_retry``: ``WORKFLOW_TASK_COMPLETED.metering_metadata.
  nonfirst_local_activity_execution_attempts``.
* ``timer_started``: ``TIMER_STARTED`` (the SDK's timers for
  ``wait_condition(timeout=...)`` included).
* ``signal``: ``WORKFLOW_EXECUTION_SIGNALED``, billed in the signalled
  history (``SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED`` counts nothing).
  A signal-with-start that starts the run is one action in all: its signal,
  written right after the start (event 2), is not counted again.
* ``update_accepted``: ``WORKFLOW_EXECUTION_UPDATE_ACCEPTED``.
* ``nexus``: ``NEXUS_OPERATION_SCHEDULED``, ``NEXUS_OPERATION_CANCEL_REQUESTED``.
* ``schedule``: a run a Schedule started (``TemporalScheduledById`` in its
  start's search attributes) adds the schedule's two actions.
* ``activity_heartbeat_estimate``: heartbeats are billed when they reach the
  server and are never in a history. Estimated for activities scheduled with
  a heartbeat timeout (this project's ``deliver`` heartbeats as it starts,
  then every few seconds): one per attempt, plus one per throttle interval
  (80% of the heartbeat timeout, the SDK's default) of the last attempt's
  run time. An estimate, kept as its own kind.

Billed but absent from every history, so not counted: rejected updates (the
page bills them; a validator's refusal writes no event), queries (the bench
sends none), workflow-task heartbeats of long local activities, the Cloud
features billed as actions (export, fairness, capacity) and schedule
create/update/delete. A closed workflow's completion is not an action. What a
still-open run will do next is not in its history either; see BENCHMARKS.md
for what that leaves out in the pipeline.

``count_namespace`` lists every run of a namespace (closed and
continued-as-new ones included), fetches each history with bounded
concurrency and adds them up by workflow type and by kind.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionStatus

DEFINITION_URL = "https://docs.temporal.io/cloud/actions"
# Action figures are reported per month at this rate (the project's target).
MONTHLY_RATE_PER_MIN = 20_000
MINUTES_PER_MONTH = 60 * 24 * 30
# The SDKs send a heartbeat at most once per this share of its timeout.
HEARTBEAT_THROTTLE = 0.8

WORKFLOW_STARTED = "workflow_started"
CHILD_WORKFLOW_INITIATED = "child_workflow_initiated"
SEARCH_ATTRIBUTES_UPSERTED = "search_attributes_upserted"
WORKFLOW_OPTIONS_UPDATED = "workflow_options_updated"
WORKFLOW_RESET = "workflow_reset"
ACTIVITY_SCHEDULED = "activity_scheduled"
ACTIVITY_RETRY = "activity_retry"
ACTIVITY_HEARTBEAT_ESTIMATE = "activity_heartbeat_estimate"
MARKERS = "markers"
LOCAL_ACTIVITY_RETRY = "local_activity_retry"
TIMER_STARTED = "timer_started"
SIGNAL = "signal"
UPDATE_ACCEPTED = "update_accepted"
NEXUS = "nexus"
SCHEDULE = "schedule"

_E = EventType
# Events that are one action each, whatever they carry.
_ONE_EACH = {
    _E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: CHILD_WORKFLOW_INITIATED,
    _E.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED: WORKFLOW_OPTIONS_UPDATED,
    _E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: ACTIVITY_SCHEDULED,
    _E.EVENT_TYPE_TIMER_STARTED: TIMER_STARTED,
    _E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: UPDATE_ACCEPTED,
    _E.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED: NEXUS,
    _E.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUESTED: NEXUS,
}
_ACTIVITY_ENDS = {
    _E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
    _E.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
    _E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
    _E.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "activity_task_canceled_event_attributes",
}
_CHANGE_VERSION = "TemporalChangeVersion"
_SCHEDULED_BY = "TemporalScheduledById"


def _seconds(event: HistoryEvent) -> float:
    return event.event_time.seconds + event.event_time.nanos / 1e9


class HasEvents(Protocol):
    """A ``temporalio.client.WorkflowHistory`` or an API ``History``."""

    @property
    def events(self) -> Iterable[HistoryEvent]: ...


def classify(history: HasEvents) -> Counter[str]:
    """Billable actions in one run's history, by kind (see the module)."""
    counts: Counter[str] = Counter()
    marker_tasks: set[int] = set()
    # scheduled event id -> heartbeat timeout (s), then start time and attempt
    heartbeat_timeouts: dict[int, float] = {}
    started: dict[int, tuple[float, int]] = {}
    for event in history.events:
        kind = event.event_type
        if kind in _ONE_EACH:
            counts[_ONE_EACH[kind]] += 1
        if kind == _E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            counts[WORKFLOW_STARTED] += 1
            attrs = event.workflow_execution_started_event_attributes
            if _SCHEDULED_BY in attrs.search_attributes.indexed_fields:
                counts[SCHEDULE] += 2
        elif kind == _E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            # Signal-with-start writes its signal as event 2, before the
            # first workflow task: one action with the start.
            if event.event_id != 2:
                counts[SIGNAL] += 1
        elif kind == _E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            upsert = event.upsert_workflow_search_attributes_event_attributes
            if set(upsert.search_attributes.indexed_fields) - {_CHANGE_VERSION}:
                counts[SEARCH_ATTRIBUTES_UPSERTED] += 1
        elif kind == _E.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            cause = event.workflow_task_failed_event_attributes.cause
            if (
                cause
                == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW
            ):
                counts[WORKFLOW_RESET] += 1
        elif kind == _E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            meta = event.workflow_task_completed_event_attributes.metering_metadata
            retries = meta.nonfirst_local_activity_execution_attempts
            if retries:
                counts[LOCAL_ACTIVITY_RETRY] += retries
        elif kind == _E.EVENT_TYPE_MARKER_RECORDED:
            marker_tasks.add(
                event.marker_recorded_event_attributes.workflow_task_completed_event_id
            )
        elif kind == _E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            timeout = event.activity_task_scheduled_event_attributes.heartbeat_timeout
            seconds = timeout.ToTimedelta().total_seconds()
            if seconds > 0:
                heartbeat_timeouts[event.event_id] = seconds
        elif kind == _E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            if attrs.attempt > 1:
                counts[ACTIVITY_RETRY] += attrs.attempt - 1
            started[attrs.scheduled_event_id] = (
                _seconds(event),
                max(attrs.attempt, 1),
            )
        elif kind in _ACTIVITY_ENDS:
            attrs = getattr(event, _ACTIVITY_ENDS[kind])
            scheduled = attrs.scheduled_event_id
            if scheduled in heartbeat_timeouts and scheduled in started:
                began, attempts = started[scheduled]
                ran = _seconds(event) - began
                every = heartbeat_timeouts[scheduled] * HEARTBEAT_THROTTLE
                counts[ACTIVITY_HEARTBEAT_ESTIMATE] += attempts + math.floor(
                    max(ran, 0.0) / every
                )
    if marker_tasks:
        counts[MARKERS] += len(marker_tasks)
    return counts


@dataclass
class Actions:
    """Actions summed over many runs."""

    total: int = 0
    runs: int = 0
    open_runs: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    open_by_type: Counter[str] = field(default_factory=Counter)

    def add(self, workflow_type: str, counts: Counter[str], *, open_: bool) -> None:
        n = sum(counts.values())
        self.total += n
        self.runs += 1
        self.by_kind.update(counts)
        self.by_type[workflow_type] += n
        if open_:
            self.open_runs += 1
            self.open_by_type[workflow_type] += 1

    def figures(self, events: int) -> dict[str, object]:
        """The figures ``bench.run`` records for a run of ``events`` events."""
        per_event = self.total / events if events else 0.0
        return {
            "actions": self.total,
            "actions_per_1000_events": round(per_event * 1000, 1),
            "actions_per_month_at_20k": round(
                per_event * MONTHLY_RATE_PER_MIN * MINUTES_PER_MONTH
            ),
            "actions_by_kind": dict(sorted(self.by_kind.items())),
            "actions_by_type": dict(sorted(self.by_type.items())),
            "action_runs": self.runs,
            "action_open_runs": dict(sorted(self.open_by_type.items())),
        }


async def count_namespace(client: Client, *, concurrency: int = 16) -> Actions:
    """Every run in the client's namespace, closed and continued-as-new ones
    included (visibility lists each run), its history fetched and classified."""
    slots = asyncio.Semaphore(concurrency)
    totals = Actions()

    async def one(workflow_id: str, run_id: str, wf_type: str, open_: bool) -> None:
        async with slots:
            history = await client.get_workflow_handle(
                workflow_id, run_id=run_id
            ).fetch_history()
        totals.add(wf_type, classify(history), open_=open_)

    tasks = [
        asyncio.create_task(
            one(
                execution.id,
                execution.run_id,
                execution.workflow_type,
                execution.status == WorkflowExecutionStatus.RUNNING,
            )
        )
        async for execution in client.list_workflows()
    ]
    await asyncio.gather(*tasks)
    return totals
