"""JobWorkflow: one job's entity workflow. Orchestration only; the rules are
in ``actors.rules.job``."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from actors.activities import Activities
    from actors.contracts import JobBatch, JobInput, JobOutcome, PublishJobInput
    from actors.rules import job as rules

PUBLISH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)


@workflow.defn(name="Job")
class JobWorkflow:
    """Collects a job's events and publishes its result versions.

    Events arrive through the ``deliver`` update (from a shard proxy, batched
    per job). The update only changes state; the main loop publishes.
    """

    @workflow.init
    def __init__(self, input: JobInput) -> None:
        self._settings = input.settings
        self._state = input.state or rules.new_job(
            input.tenant_id, input.job_id, workflow.now()
        )

    @workflow.update
    def deliver(self, batch: JobBatch) -> rules.BatchAck:
        # Synchronous on purpose: an update that never awaits finishes in the
        # task that accepted it, so continue-as-new never strands one.
        return rules.apply_batch(
            self._state, batch.events, max_job_bytes=self._settings.max_job_bytes
        )

    @workflow.query
    def state(self) -> rules.JobState:
        return self._state

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        limit = self._settings.continue_as_new_after
        return info.is_continue_as_new_suggested() or (
            limit is not None and info.get_current_history_length() >= limit
        )

    @workflow.run
    async def run(self, input: JobInput) -> JobOutcome:
        state, settings = self._state, self._settings
        while True:
            publication = rules.decide(state, workflow.now(), settings)
            if publication is not None:
                await workflow.execute_activity_method(
                    Activities.publish_job,
                    PublishJobInput(
                        tenant_id=state.tenant_id,
                        job_id=state.job_id,
                        publication=publication,
                        at=workflow.now(),
                    ),
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=PUBLISH_RETRY,
                )
                rules.commit(state, publication, workflow.now())
                continue
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    JobInput(
                        tenant_id=state.tenant_id,
                        job_id=state.job_id,
                        settings=settings,
                        state=state,
                    )
                )
            closes_at = rules.closes_at(state, settings)
            if closes_at is not None and workflow.now() >= closes_at:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if rules.has_work(state):
                    continue
                return JobOutcome(
                    version=state.version,
                    status=state.last_status,
                    events=state.published_events,
                )
            wake = rules.next_wakeup(state, settings)
            timeout = None if wake is None else max(wake - workflow.now(), timedelta(0))
            # The timeout is the deadline or the end of the linger period.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: rules.has_work(state) or self._should_continue_as_new(),
                    timeout=timeout,
                )
