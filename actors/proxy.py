"""ProxyWorkflow: one shard's front door. Orchestration only; the rules are
in ``actors.rules.proxy``."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from actors import names
    from actors.contracts import (
        DeliverInput,
        DeliverResult,
        ProxyInput,
        ReportInput,
        SettingsRequest,
    )
    from actors.policies import (
        DELIVER_HEARTBEAT_TIMEOUT,
        DELIVER_TIMEOUT,
        REPORT_TIMEOUT,
        RETRY,
        SETTINGS_TIMEOUT,
        continue_as_new_due,
    )
    from actors.rules import proxy as rules
    from actors.rules.job import RollupDelta

# After a delivery fails for good, its jobs wait this long before another try,
# so a poisoned batch cannot spin the shard.
FAILED_DELIVERY_PAUSE = timedelta(seconds=30)
# Runs started since this patch keep each workflow task's bytes under
# ``rules.TASK_BYTES`` (see ``rules.TaskBudget``); earlier histories replay
# without the budget.
TASK_BUDGET_PATCH = "proxy-task-byte-budget"
# Runs started since this patch send a job's later events at once once it has
# had a delivery (``rules.ProxyState.delivered``), rather than holding them
# for the rest of a job the proxy no longer sees whole.
FOLLOW_UPS_PATCH = "proxy-follow-ups-at-once"
# Runs started since this patch carry held jobs into the next run when they
# continue as new (delivering only the oldest, past ``rules.CARRY_BYTES``),
# rather than delivering everything they hold first.
CARRY_PATCH = "proxy-carry-held"
# Runs started since this patch send a job whose ``job.opened`` sets a
# deadline no longer than the hold at once (``rules.deadline_within``).
SHORT_DEADLINES_PATCH = "proxy-short-deadlines-at-once"


@workflow.defn(name=names.PROXY)
class ProxyWorkflow:
    """Takes batches of events through the ``ingest`` update and delivers
    them to their job workflows, many jobs per delivery activity.

    A batch is acknowledged once it is in the outbox, which is workflow state:
    from then on it survives the loss of every process. Each job's events are
    held until they make the job complete or the oldest has waited
    ``hold_s``, so that a trickle costs a job one delivery (one workflow
    task), not one per event. Tenant rollups that deliveries hand back are
    reported every ``rollup_interval_s``.

    When Temporal suggests continue-as-new, the proxy drains: it refuses new
    batches (senders retry), lets its deliveries in flight finish, delivers
    its edge rejections and, oldest first, the held jobs that do not fit in
    ``rules.CARRY_BYTES``, then carries the rest (held events with their
    queueing times, unreported rollups, the de-duplication window, counters)
    into the next run, where the hold goes on as if nothing happened. A
    retired shard delivers and reports everything instead.
    """

    @workflow.init
    def __init__(self, input: ProxyInput) -> None:
        self._settings = input.settings
        self._state = input.state or rules.ProxyState()
        # Jobs with a delivery in flight: at most one per job at a time.
        self._busy: set[str] = set()
        self._running = 0
        # Events and rejections in deliveries that have not finished.
        self._in_flight = 0
        self._deliveries = 0
        self._reporting = False
        self._next_report = workflow.now()
        self._tasks: list[asyncio.Task[None]] = []
        # Draining: refusing batches until everything held is delivered and
        # reported, then continuing as new (or, retired, completing).
        self._draining = False
        # Retired: the shard count shrank and this shard closes for good once
        # it has delivered and reported everything it holds.
        self._retired = False
        self._closed = False
        self._continuing = False
        # Bytes taken in and sent out by the current workflow task.
        self._budget = rules.TaskBudget()
        self._budgeted = False
        self._follow_ups = False
        self._carry = False
        self._short_deadlines = False
        # Replay-safe metrics (the SDK emits nothing while replaying), so each
        # event is counted once, here, where it is acknowledged.
        meter = workflow.metric_meter().with_additional_attributes(
            {"shard": str(self._settings.shard)}
        )
        self._events_total = meter.create_counter(
            "eventflow_events_total", "Events taken by proxies, by outcome."
        )
        self._held_events = meter.create_gauge(
            "eventflow_proxy_held_events",
            "Events and edge rejections a proxy holds, not yet delivered.",
        )
        self._oldest_held = meter.create_gauge_float(
            "eventflow_proxy_oldest_held_seconds",
            "How long the oldest job a proxy holds has waited.",
            "s",
        )

    # --- Messages ------------------------------------------------------------

    @workflow.update(name=names.PROXY_INGEST)
    def ingest(self, batch: rules.IngestBatch) -> rules.IngestAck:
        self._task_budget().ingested += rules.batch_bytes(batch)
        ack = rules.ingest(
            self._state,
            batch,
            self._settings,
            now=workflow.now(),
            follow_ups=self._follow_ups,
            short_deadlines=self._short_deadlines,
        )
        for outcome, count in (
            ("accepted", ack.accepted),
            ("duplicate", ack.duplicates),
            ("refused", ack.rejected),
        ):
            if count:
                self._events_total.add(count, {"outcome": outcome})
        self._show_held()
        return ack

    def _task_budget(self) -> rules.TaskBudget:
        return self._budget.at(workflow.info().get_current_history_length())

    def _show_held(self) -> None:
        state = self._state
        self._held_events.set(state.pending + len(state.rejections))
        oldest = next(iter(state.queued_at.values()), None)
        self._oldest_held.set(
            0.0 if oldest is None else (workflow.now() - oldest).total_seconds()
        )

    @ingest.validator
    def _admit(self, batch: rules.IngestBatch) -> None:
        # A rejected update leaves no trace in history, so pushing back is cheap.
        if self._retired:
            raise ApplicationError(
                f"shard {self._settings.shard} is retired: the shard count is "
                "smaller now; send with the current --shards",
                type=names.RETIRED,
                non_retryable=True,
            )
        if self._draining:
            raise ApplicationError(
                f"shard {self._settings.shard} is continuing as new; retry shortly",
                type=names.BACKPRESSURE,
            )
        if self._state.pending >= self._settings.max_pending:
            raise ApplicationError(
                f"shard {self._settings.shard} has {self._state.pending} events "
                "waiting for delivery; retry later",
                type=names.BACKPRESSURE,
            )
        budget = self._task_budget()
        if not budget.admits(rules.batch_bytes(batch)):
            raise ApplicationError(
                f"shard {self._settings.shard} has taken {budget.spent} bytes in "
                "this workflow task already; retry shortly",
                type=names.BACKPRESSURE,
            )

    @workflow.update(name=names.PROXY_RETIRE)
    async def retire(self) -> int:
        """Close this shard for good, when the shard count has shrunk: refuse
        new batches, deliver and report everything held, then complete.
        Returns, once the shard holds nothing, how many events and rejections
        it still held when retired."""
        held = self._state.pending + len(self._state.rejections) + self._in_flight
        self._retired = True
        self._draining = True
        await workflow.wait_condition(lambda: self._closed)
        return held

    @retire.validator
    def _may_retire(self) -> None:
        if self._continuing:
            raise ApplicationError(
                f"shard {self._settings.shard} is continuing as new; retry shortly",
                type=names.BACKPRESSURE,
            )

    @workflow.query(name=names.PROXY_PENDING)
    def pending(self) -> int:
        return self._state.pending + len(self._state.rejections)

    @workflow.query(name=names.PROXY_STATUS)
    def status(self) -> rules.ProxyView:
        return rules.view(
            self._state,
            self._settings,
            deliveries_in_flight=self._running,
            events_in_flight=self._in_flight,
            draining=self._draining,
            retired=self._retired,
        )

    @workflow.query(name=names.PROXY_HELD)
    def held(self, job_key: str) -> list[str]:
        """The event ids held for one job (``{tenant_id}/{job_id}``)."""
        return rules.held_for(self._state, job_key)

    # --- The main loop ---------------------------------------------------------

    @workflow.run
    async def run(self, input: ProxyInput) -> None:
        self._budgeted = workflow.patched(TASK_BUDGET_PATCH)
        self._follow_ups = workflow.patched(FOLLOW_UPS_PATCH)
        self._carry = workflow.patched(CARRY_PATCH)
        self._short_deadlines = workflow.patched(SHORT_DEADLINES_PATCH)
        # Tunables come from the workers' configuration, read afresh each run,
        # so a changed setting applies from the next continue-as-new on.
        self._settings = await workflow.execute_local_activity(
            names.PROXY_SETTINGS,
            SettingsRequest(shard=self._settings.shard, shards=self._settings.shards),
            result_type=rules.ProxySettings,
            start_to_close_timeout=SETTINGS_TIMEOUT,
        )
        if self._short_deadlines:
            # Batches handled before the lines above (a run's first ones, in
            # its first task) were judged without this run's patches and
            # settings: judge what they left held again.
            rules.reassess(
                self._state,
                self._settings,
                follow_ups=self._follow_ups,
                short_deadlines=True,
            )
        self._next_report = workflow.now() + self._report_interval()
        while True:
            if self._drain_due():
                # Refuse new batches (the validator pushes back) and deliver
                # what the next run may not carry: it stays small however
                # busy the shard is.
                self._draining = True
            if self._run_done():
                break
            await self._wait_for_work()
            if self._report_due():
                self._start_report()
            while self._can_deliver():
                self._start_delivery()
            self._tasks = [task for task in self._tasks if not task.done()]
        if self._retired:
            # Closed for good: the retire update returns, then the run ends.
            self._closed = True
            await workflow.wait_condition(workflow.all_handlers_finished)
            return
        self._continuing = True
        # A report still in flight belongs to this run: let it finish. Updates
        # accepted meanwhile only add to the state carried over.
        await workflow.wait_condition(
            lambda: (
                self._running == 0
                and not self._reporting
                and workflow.all_handlers_finished()
            )
        )
        workflow.continue_as_new(ProxyInput(settings=self._settings, state=self._state))

    async def _wait_for_work(self) -> None:
        """Sleep until there is something to start, or until the next timer
        (a held job coming due, rollups due for their report).

        Timers run only while something waits on one; a job or rollups
        arriving while no timer runs wake the loop to start one.
        """
        self._show_held()
        timeout = self._next_timer()
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: (
                    self._has_work()
                    or (timeout is None and self._next_timer() is not None)
                ),
                timeout=timeout,
            )

    def _has_work(self) -> bool:
        return (
            self._can_deliver()
            or self._report_due()
            or self._drain_due()
            or self._run_done()
        )

    def _next_timer(self) -> timedelta | None:
        timers = [t for t in (self._until_report(), self._hold_left()) if t]
        return min(timers) if timers else None

    # --- Decisions -------------------------------------------------------------

    def _drain_due(self) -> bool:
        return not self._draining and continue_as_new_due(
            self._settings.continue_as_new_after
        )

    def _carrying(self) -> bool:
        """Draining into a next run that takes over what is held."""
        return self._carry and self._draining and not self._retired

    def _drained(self) -> bool:
        state = self._state
        if state.rejections or self._running:
            return False
        if self._carrying():
            return not rules.over_carry(state)
        return not state.outbox and not state.rollups

    def _run_done(self) -> bool:
        """Draining, with everything delivered and reported that the next run
        does not take over (a retired run also waits for a report in flight:
        nothing comes after it)."""
        if not self._draining or not self._drained():
            return False
        return not (self._retired and self._reporting)

    def _due(self) -> datetime | None:
        """Jobs queued at or before this are due (None: every job is due)."""
        if self._draining:
            return None
        return workflow.now() - timedelta(seconds=self._settings.hold_s)

    def _can_deliver(self) -> bool:
        if self._running >= self._settings.max_deliveries:
            return False
        if self._delivery_room() is None:
            return False
        if self._state.rejections:
            return True
        if self._carrying() and not rules.over_carry(self._state):
            return False  # the next run delivers the rest
        return rules.any_due(self._state, self._busy, self._due())

    def _delivery_room(self) -> int | None:
        """The bytes the next delivery may carry in this workflow task."""
        if not self._budgeted:
            return self._settings.delivery_bytes
        return self._task_budget().delivery_room()

    def _hold_left(self) -> timedelta | None:
        """Time until the next held job comes due; None when nothing waits on
        a timer (nothing held, all due already, or draining)."""
        if self._draining:
            return None
        oldest = rules.next_due(self._state, self._busy)
        if oldest is None:
            return None
        left = oldest + timedelta(seconds=self._settings.hold_s) - workflow.now()
        return left if left > timedelta(0) else None

    def _report_interval(self) -> timedelta:
        return timedelta(seconds=self._settings.rollup_interval_s)

    def _report_due(self) -> bool:
        if self._carrying():
            return False  # the next run reports them
        return (
            bool(self._state.rollups)
            and not self._reporting
            and (self._draining or workflow.now() >= self._next_report)
        )

    def _until_report(self) -> timedelta | None:
        """How long until held rollups are due; None when none are held (so
        no timer runs while there is nothing to report)."""
        if not self._state.rollups or self._reporting or self._carrying():
            return None
        if self._draining:
            return timedelta(0)
        return max(self._next_report - workflow.now(), timedelta(0))

    # --- Work ------------------------------------------------------------------

    def _start_delivery(self) -> None:
        settings, state = self._settings, self._state
        event_bytes, rejection_bytes = (
            settings.delivery_bytes,
            settings.delivery_bytes // 2,
        )
        if self._budgeted:
            # Two thirds of the task's room for events, a third for rejections.
            room = self._delivery_room() or 0
            event_bytes = min(event_bytes, room * 2 // 3)
            rejection_bytes = min(rejection_bytes, room // 3)
        deliveries = rules.take(
            state,
            settings.delivery_batch,
            self._busy,
            event_bytes,
            due=self._due(),
            remember=self._follow_ups,
        )
        # Rejections share a delivery with events, so they get half its bytes.
        rejections = rules.take_rejections(state, rejection_bytes)
        if self._budgeted:
            self._task_budget().delivered += rules.deliveries_bytes(
                deliveries, rejections
            )
        keys = [rules.job_key(d.tenant_id, d.job_id) for d in deliveries]
        # Marked before the task first runs, so the next check sees them.
        self._busy.update(keys)
        self._running += 1
        self._deliveries += 1
        input = DeliverInput(
            deliveries=deliveries,
            rejections=rejections,
            at=workflow.now(),
            # Stable across the activity's retries: a job answers a retried
            # delivery with the reply it gave the first attempt.
            delivery_id=f"{workflow.info().run_id}/{self._deliveries}",
        )
        self._tasks.append(asyncio.create_task(self._deliver(input, keys)))

    async def _deliver(self, input: DeliverInput, keys: list[str]) -> None:
        size = sum(len(d.events) for d in input.deliveries) + len(input.rejections)
        self._in_flight += size
        try:
            result = await workflow.execute_activity(
                names.DELIVER,
                input,
                result_type=DeliverResult,
                start_to_close_timeout=DELIVER_TIMEOUT,
                heartbeat_timeout=DELIVER_HEARTBEAT_TIMEOUT,
                retry_policy=RETRY,
            )
            rules.gather_rollups(self._state, result.rollups)
        except ActivityError:
            # Retries are unlimited, so this is a non-retryable failure (a bug
            # or a poisoned batch). Keep the events rather than drop them: they
            # go back to the outbox and the failure is visible in history.
            workflow.logger.exception("delivery failed; events kept for retry")
            await workflow.sleep(FAILED_DELIVERY_PAUSE)
            rules.requeue(self._state, input.deliveries, input.rejections)
        finally:
            self._busy.difference_update(keys)
            self._running -= 1
            self._in_flight -= size

    def _start_report(self) -> None:
        # Taken and flagged here, before the task first runs, so the next
        # check cannot start a second report.
        self._reporting = True
        rollups = rules.take_rollups(self._state)
        self._tasks.append(asyncio.create_task(self._report(rollups)))

    async def _report(self, rollups: dict[str, list[RollupDelta]]) -> None:
        try:
            await workflow.execute_activity(
                names.REPORT,
                ReportInput(rollups=rollups),
                start_to_close_timeout=REPORT_TIMEOUT,
                retry_policy=RETRY,
            )
        except ActivityError:
            workflow.logger.exception("rollup report failed; rollups kept")
            rules.restore_rollups(self._state, rollups)
        finally:
            self._reporting = False
            self._next_report = workflow.now() + self._report_interval()
