"""JobWorkflow: one job's entity workflow. Orchestration only; the rules are
in ``actors.rules.job``."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from actors import names
    from actors.contracts import (
        STATUS_KEY,
        JobBatch,
        JobInput,
        JobOutcome,
        PublishJobInput,
        started_state,
    )
    from actors.policies import PUBLISH_TIMEOUT, RETRY, continue_as_new_due
    from actors.rules import job as rules


@workflow.defn(name=names.JOB)
class JobWorkflow:
    """Collects a job's events and publishes its result versions.

    Events arrive through the ``deliver`` update, from a shard proxy, batched
    per job. When a delivery completes or amends the job, the publication goes
    back in the update's reply and the proxy's delivery writes it, batched
    with other jobs' (no activity, no extra workflow task here). What happens
    without a delivery (the deadline passing) the main loop publishes itself.
    Once everything is published the job closes, its result carrying its
    state (``JobSettings.reopen``); a late event's delivery starts its next
    generation from that state.
    """

    @workflow.init
    def __init__(self, input: JobInput) -> None:
        self._settings = input.settings
        # Started with a batch (eagerly, by a delivery: a new job's first,
        # or a closed job's late one, reopening it): the delivery computed
        # the same state (and reply) from this input, and writes it.
        self._state = started_state(input) or rules.new_job(
            input.tenant_id, input.job_id, workflow.now()
        )
        # True while the main loop has a publication in flight: a delivery
        # must not hand off a second publication of the same version.
        self._publishing = False
        # What the status search attribute says now: set at start (open),
        # carried across continue-as-new, kept current by ``_show_status``.
        self._shown_status = workflow.info().typed_search_attributes.get(STATUS_KEY)

    @workflow.update(name=names.JOB_DELIVER)
    def deliver(self, batch: JobBatch) -> rules.Reply:
        # Synchronous on purpose: an update that never awaits finishes in the
        # task that accepted it, so continue-as-new never strands one.
        state = self._state
        last = state.last_delivery
        if last and last.delivery_id == batch.delivery_id:
            return last  # a retried delivery: the same answer
        return rules.receive(
            state,
            batch.events,
            delivery_id=batch.delivery_id,
            first_queued_at=batch.first_queued_at,
            now=workflow.now(),
            settings=self._settings,
            publishing=self._publishing,
        )

    @workflow.query(name=names.JOB_STATE)
    def state(self) -> rules.JobState:
        return self._state

    @workflow.query(name=names.JOB_STATUS)
    def status(self) -> rules.JobView:
        return rules.view(self._state, self._settings)

    def _should_continue_as_new(self) -> bool:
        return continue_as_new_due(self._settings.continue_as_new_after)

    def _show_status(self) -> None:
        """Keep the status search attribute current, for visibility queries
        (``script.inspect stuck``). A delivery's hand-off changes the status
        inside an update, so the main loop, woken by it, upserts here."""
        status = self._state.last_status or names.JOB_OPEN
        if status != self._shown_status:
            workflow.upsert_search_attributes([STATUS_KEY.value_set(status)])
            self._shown_status = status

    @workflow.run
    async def run(self, input: JobInput) -> JobOutcome:
        state, settings = self._state, self._settings
        while True:
            self._show_status()
            publication = rules.decide(state, workflow.now(), settings)
            if publication is not None:
                self._publishing = True
                await workflow.execute_activity(
                    names.PUBLISH_JOB,
                    PublishJobInput(
                        tenant_id=state.tenant_id,
                        job_id=state.job_id,
                        publication=publication,
                        at=workflow.now(),
                    ),
                    start_to_close_timeout=PUBLISH_TIMEOUT,
                    retry_policy=RETRY,
                )
                rules.commit(state, publication, workflow.now())
                self._publishing = False
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
                # A job that reopens hands its state to its next generation
                # through this result.
                return JobOutcome(
                    version=state.version,
                    status=state.last_status,
                    events=state.published_events,
                    state=state if settings.reopen else None,
                )
            wake = rules.next_wakeup(state, settings)
            timeout = None if wake is None else max(wake - workflow.now(), timedelta(0))
            published, seen = state.publications, state.first_seen
            # The timeout is the deadline or the end of the linger period. A
            # delivery that hands off a publication moves that time, and so
            # does a first batch whose events reached the proxy before the
            # job started (``first_seen``), so both wake the loop too (in the
            # same task: the timer is replaced, not left to fire).
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda published=published, seen=seen: (
                        rules.has_work(state)
                        or self._should_continue_as_new()
                        or state.publications != published
                        or state.first_seen != seen
                    ),
                    timeout=timeout,
                )
