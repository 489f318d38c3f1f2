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
    )
    from actors.rules import proxy as rules
    from actors.rules.job import RollupDelta

BACKPRESSURE = names.BACKPRESSURE
RETIRED = names.RETIRED
# After a delivery fails for good, its jobs wait this long before another try,
# so a poisoned batch cannot spin the shard.
FAILED_DELIVERY_PAUSE = timedelta(seconds=30)
HANDOFF_PATCH = "jobs-hand-publications-to-deliveries"
ROLLUP_PATCH = "proxies-report-rollups-in-batches"
DRAIN_PATCH = "proxies-drain-before-continue-as-new"
HOLD_PATCH = "proxies-hold-a-trickle-briefly"
PER_JOB_DEDUPE_PATCH = "proxies-de-duplicate-event-ids-per-job"
REJECTIONS_PATCH = "proxies-bound-rejections-per-delivery"
REPORT_ON_DRAIN_PATCH = "proxies-report-rollups-when-draining"
PER_JOB_HOLD_PATCH = "proxies-hold-each-job-until-complete-or-due"


@workflow.defn(name=names.PROXY)
class ProxyWorkflow:
    """Takes batches of events through the ``ingest`` update and delivers
    them to their job workflows, many jobs per delivery activity.

    A batch is acknowledged once it is in the outbox, which is workflow state:
    from then on it survives the loss of every process.
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
        self._draining = False
        # Retired: the shard count shrank and this shard closes for good once
        # it has delivered and reported everything it holds.
        self._retired = False
        self._closed = False
        self._continuing = False
        self._hold = False
        # Report held rollups as soon as a drain starts, rather than carry
        # them into the next run, whose report clock starts afresh: a proxy
        # continuing as new every few seconds would otherwise never report.
        self._report_on_drain = False
        # Hold each job's events until they make the job complete or the
        # oldest has waited hold_s, instead of holding the whole outbox.
        self._per_job_hold = False
        # When the outbox last went from empty to holding events.
        self._filling_since: datetime | None = None

    @workflow.update(name=names.PROXY_INGEST)
    def ingest(self, batch: rules.IngestBatch) -> rules.IngestAck:
        if self._filling_since is None and batch.events:
            self._filling_since = workflow.now()
        # The window is per job: event ids need only be unique per job
        # (histories from before keyed it by event id alone).
        return rules.ingest(
            self._state,
            batch,
            self._settings,
            per_job=workflow.patched(PER_JOB_DEDUPE_PATCH),
            now=workflow.now(),
        )

    @ingest.validator
    def _admit(self, batch: rules.IngestBatch) -> None:
        # A rejected update leaves no trace in history, so pushing back is cheap.
        if self._retired:
            raise ApplicationError(
                f"shard {self._settings.shard} is retired: the shard count is "
                "smaller now; send with the current --shards",
                type=RETIRED,
                non_retryable=True,
            )
        if self._draining:
            raise ApplicationError(
                f"shard {self._settings.shard} is continuing as new; retry shortly",
                type=BACKPRESSURE,
            )
        if self._state.pending >= self._settings.max_pending:
            raise ApplicationError(
                f"shard {self._settings.shard} has {self._state.pending} events "
                "waiting for delivery; retry later",
                type=BACKPRESSURE,
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
                type=BACKPRESSURE,
            )

    @workflow.query(name=names.PROXY_PENDING)
    def pending(self) -> int:
        return self._state.pending + len(self._state.rejections)

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        limit = self._settings.continue_as_new_after
        return info.is_continue_as_new_suggested() or (
            limit is not None and info.get_current_history_length() >= limit
        )

    def _due(self) -> datetime | None:
        """Jobs queued at or before this are due (None: every job is due)."""
        if not self._per_job_hold or self._draining:
            return None
        return workflow.now() - timedelta(seconds=self._settings.hold_s)

    def _can_deliver(self) -> bool:
        if self._running >= self._settings.max_deliveries:
            return False
        if self._state.rejections:
            return True
        if self._per_job_hold:
            return rules.any_due(self._state, self._busy, self._due())
        if self._hold_left() is not None:
            return False
        return any(key not in self._busy for key in self._state.outbox)

    def _hold_left(self) -> timedelta | None:
        """Time until the next held job comes due (per-job hold), or until the
        outbox's hold ends (histories from before); None when nothing waits
        on a timer (nothing held, all due, or draining).

        Holding a trickle for a moment gives each job several events per
        delivery instead of one, and a delivery costs the job a workflow task
        whatever it carries.
        """
        if self._per_job_hold:
            if self._draining:
                return None
            oldest = rules.next_due(self._state, self._busy)
            if oldest is None:
                return None
            left = oldest + timedelta(seconds=self._settings.hold_s) - workflow.now()
            return left if left > timedelta(0) else None
        if not self._hold or self._draining or self._filling_since is None:
            return None
        if self._state.pending >= self._settings.delivery_batch:
            return None
        left = (
            self._filling_since
            + timedelta(seconds=self._settings.hold_s)
            - workflow.now()
        )
        return left if left > timedelta(0) else None

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

    def _drained(self) -> bool:
        state = self._state
        return not state.outbox and not state.rejections and self._running == 0

    def _ready_to_continue(self) -> bool:
        """Drained, and the rollups held are reported (histories from before
        carry them over instead)."""
        return self._drained() and not (self._report_on_drain and self._state.rollups)

    def _closable(self) -> bool:
        """Retired, and nothing left to deliver or report."""
        return (
            self._retired
            and self._drained()
            and not self._state.rollups
            and not self._reporting
        )

    def _report_due(self) -> bool:
        return (
            bool(self._state.rollups)
            and not self._reporting
            and (
                self._retired
                or (self._draining and self._report_on_drain)
                or workflow.now() >= self._next_report
            )
        )

    def _until_report(self) -> timedelta | None:
        """How long until held rollups are due; None when none are held (so
        no timer runs while there is nothing to report)."""
        if not self._state.rollups or self._reporting:
            return None
        if self._retired or (self._draining and self._report_on_drain):
            return timedelta(0)
        return max(self._next_report - workflow.now(), timedelta(0))

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
            self._next_report = workflow.now() + timedelta(
                seconds=self._settings.rollup_interval_s
            )

    @workflow.run
    async def run(self, input: ProxyInput) -> None:
        # Tunables come from the workers' configuration, read afresh each run,
        # so a changed setting applies from the next continue-as-new on.
        self._settings = await workflow.execute_local_activity(
            names.PROXY_SETTINGS,
            SettingsRequest(shard=self._settings.shard, shards=self._settings.shards),
            result_type=rules.ProxySettings,
            start_to_close_timeout=timedelta(seconds=10),
        )
        state = self._state
        tasks: list[asyncio.Task[None]] = []
        # Histories from before the outbox was held deliver at once.
        self._hold = workflow.patched(HOLD_PATCH)
        self._report_on_drain = workflow.patched(REPORT_ON_DRAIN_PATCH)
        self._per_job_hold = workflow.patched(PER_JOB_HOLD_PATCH)
        self._next_report = workflow.now() + timedelta(
            seconds=self._settings.rollup_interval_s
        )
        while True:
            if self._retired:
                if self._closable():
                    break
            else:
                if not self._draining and self._should_continue_as_new():
                    if not workflow.patched(DRAIN_PATCH):
                        break  # histories from before draining
                    # Refuse new batches (the validator pushes back), deliver
                    # what is queued, then continue-as-new with an empty
                    # outbox: what is carried over stays small however busy
                    # the shard is.
                    self._draining = True
                if self._draining and self._ready_to_continue():
                    break
            # Timers run only while rollups wait for their report or the
            # outbox is held; either arriving while no timer runs wakes the
            # loop to start one.
            timers = [t for t in (self._until_report(), self._hold_left()) if t]
            timeout = min(timers) if timers else None
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda armed=timeout is not None: (
                        self._can_deliver()
                        or (not self._draining and self._should_continue_as_new())
                        or (
                            self._draining
                            and not self._retired
                            and self._ready_to_continue()
                        )
                        or self._closable()
                        or self._report_due()
                        or (
                            not armed
                            and (
                                self._until_report() is not None
                                or self._hold_left() is not None
                            )
                        )
                    ),
                    timeout=timeout,
                )
            if self._report_due():
                # Taken and flagged here, before the task first runs, so the
                # next check cannot start a second report.
                self._reporting = True
                rollups = rules.take_rollups(state)
                tasks.append(asyncio.create_task(self._report(rollups)))
            while self._can_deliver():
                deliveries = rules.take(
                    state,
                    self._settings.delivery_batch,
                    self._busy,
                    self._settings.delivery_bytes,
                    due=self._due(),
                )
                # Rejections share a delivery with events, so they get half
                # its byte budget (histories from before take them all).
                if workflow.patched(REJECTIONS_PATCH):
                    rejections = rules.take_rejections(
                        state, self._settings.delivery_bytes // 2
                    )
                else:
                    rejections, state.rejections = state.rejections, []
                keys = [rules.job_key(d.tenant_id, d.job_id) for d in deliveries]
                self._busy.update(keys)
                # What stays behind (busy jobs) starts a new hold.
                self._filling_since = workflow.now() if state.outbox else None
                self._running += 1
                self._deliveries += 1
                # Jobs hand their publications back to deliveries that carry
                # an id (histories from before that carry none).
                delivery_id = (
                    f"{workflow.info().run_id}/{self._deliveries}"
                    if workflow.patched(HANDOFF_PATCH)
                    else ""
                )
                # Deliveries hand rollups back for the proxy to report in
                # batches (histories from before report them themselves).
                batched = workflow.patched(ROLLUP_PATCH)
                tasks.append(
                    asyncio.create_task(
                        self._deliver(
                            DeliverInput(
                                deliveries=deliveries,
                                rejections=rejections,
                                at=workflow.now(),
                                delivery_id=delivery_id,
                                report_rollups=not batched,
                            ),
                            keys,
                        )
                    )
                )
            tasks = [task for task in tasks if not task.done()]
        if self._retired:
            # Closed for good: the retire update returns, then the run ends.
            self._closed = True
            await workflow.wait_condition(workflow.all_handlers_finished)
            return
        self._continuing = True
        # Deliveries and reports in flight belong to this run: finish them
        # first. Updates accepted meanwhile only add to the state carried over,
        # and so do rollups not yet reported.
        await workflow.wait_condition(
            lambda: (
                self._running == 0
                and not self._reporting
                and workflow.all_handlers_finished()
            )
        )
        workflow.continue_as_new(ProxyInput(settings=self._settings, state=state))
