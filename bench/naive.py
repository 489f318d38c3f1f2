"""The baseline the benchmarks compare against: the seed's design as written.

One update-with-start per event, straight to a per-job workflow, with
Temporal's default JSON data converter and no batching anywhere; the job
writes its result through an activity when complete. Also the calibration
workflow: a trivial update, to measure how many single-event deliveries per
second the server and one worker take. Benchmark code only; production never
registers these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow

NAIVE_TASK_QUEUE = "eventflow-naive"


@dataclass
class NaiveEvent:
    """An event as a plain dataclass, as the default JSON converter expects."""

    type: str
    event_id: str
    tenant_id: str
    job_id: str
    at: str
    required: list[str] | None = None
    analysis_type: str | None = None
    part: int | None = None
    parts: int | None = None
    payload: dict | None = None


@dataclass
class NaiveResult:
    tenant_id: str
    job_id: str
    events: int
    analyses: dict = field(default_factory=dict)


class NaiveSink:
    """Appends results to one JSON Lines file, as plainly as the seed did."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @activity.defn(name="naive_write")
    def write(self, result: NaiveResult) -> None:
        line = json.dumps({"type": "job.result", **result.__dict__}) + "\n"
        with self.path.open("a") as f:
            f.write(line)


NAIVE_JOB = "NaiveJob"


@workflow.defn(name=NAIVE_JOB)
class NaiveJobWorkflow:
    def __init__(self) -> None:
        self._required: list[str] | None = None
        self._parts: dict[str, dict[int, dict]] = {}
        self._expected: dict[str, int] = {}
        self._seen: set[str] = set()

    @workflow.update
    def add(self, event: NaiveEvent) -> bool:
        if event.event_id in self._seen:
            return False
        self._seen.add(event.event_id)
        if event.type == "job.opened":
            self._required = event.required
        elif event.analysis_type is not None and event.part is not None:
            self._parts.setdefault(event.analysis_type, {})[event.part] = (
                event.payload or {}
            )
            self._expected[event.analysis_type] = event.parts or 0
        return True

    def _complete(self) -> bool:
        return self._required is not None and all(
            len(self._parts.get(t, {})) == self._expected.get(t, -1)
            for t in self._required
        )

    @workflow.run
    async def run(self, tenant_id: str, job_id: str) -> None:
        await workflow.wait_condition(self._complete)
        await workflow.execute_activity(
            "naive_write",
            NaiveResult(
                tenant_id=tenant_id,
                job_id=job_id,
                events=len(self._seen),
                analyses={
                    t: [p[i] for i in sorted(p)] for t, p in sorted(self._parts.items())
                },
            ),
            start_to_close_timeout=timedelta(seconds=60),
        )
        await workflow.wait_condition(workflow.all_handlers_finished)


@workflow.defn(name="Calibration")
class CalibrationWorkflow:
    """Does nothing but take one update: the cheapest possible delivery."""

    def __init__(self) -> None:
        self._done = False

    @workflow.update
    def touch(self) -> None:
        self._done = True

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._done)
