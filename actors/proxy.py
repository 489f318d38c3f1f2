"""ProxyWorkflow: one shard's front door. Orchestration only; the rules are
in ``actors.rules.proxy``."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from actors.activities import Activities
    from actors.contracts import DeliverInput, ProxyInput, SettingsRequest
    from actors.rules import proxy as rules

DELIVER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
BACKPRESSURE = "Backpressure"
# After a delivery fails for good, its jobs wait this long before another try,
# so a poisoned batch cannot spin the shard.
FAILED_DELIVERY_PAUSE = timedelta(seconds=30)
HANDOFF_PATCH = "jobs-hand-publications-to-deliveries"


@workflow.defn(name="Proxy")
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
        self._deliveries = 0

    @workflow.update
    def ingest(self, batch: rules.IngestBatch) -> rules.IngestAck:
        return rules.ingest(self._state, batch, self._settings)

    @ingest.validator
    def _admit(self, batch: rules.IngestBatch) -> None:
        # A rejected update leaves no trace in history, so pushing back is cheap.
        if self._state.pending >= self._settings.max_pending:
            raise ApplicationError(
                f"shard {self._settings.shard} has {self._state.pending} events "
                "waiting for delivery; retry later",
                type=BACKPRESSURE,
            )

    @workflow.query
    def pending(self) -> int:
        return self._state.pending + len(self._state.rejections)

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        limit = self._settings.continue_as_new_after
        return info.is_continue_as_new_suggested() or (
            limit is not None and info.get_current_history_length() >= limit
        )

    def _can_deliver(self) -> bool:
        if self._running >= self._settings.max_deliveries:
            return False
        if self._state.rejections:
            return True
        return any(key not in self._busy for key in self._state.outbox)

    async def _deliver(self, input: DeliverInput, keys: list[str]) -> None:
        try:
            await workflow.execute_activity_method(
                Activities.deliver,
                input,
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=DELIVER_RETRY,
            )
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

    @workflow.run
    async def run(self, input: ProxyInput) -> None:
        # Tunables come from the workers' configuration, read afresh each run,
        # so a changed setting applies from the next continue-as-new on.
        self._settings = await workflow.execute_local_activity_method(
            Activities.proxy_settings,
            SettingsRequest(shard=self._settings.shard, shards=self._settings.shards),
            start_to_close_timeout=timedelta(seconds=10),
        )
        state = self._state
        tasks: list[asyncio.Task[None]] = []
        while not self._should_continue_as_new():
            await workflow.wait_condition(
                lambda: self._can_deliver() or self._should_continue_as_new()
            )
            while self._can_deliver():
                deliveries = rules.take(
                    state,
                    self._settings.delivery_batch,
                    self._busy,
                    self._settings.delivery_bytes,
                )
                rejections, state.rejections = state.rejections, []
                keys = [rules.job_key(d.tenant_id, d.job_id) for d in deliveries]
                self._busy.update(keys)
                self._running += 1
                self._deliveries += 1
                # Jobs hand their publications back to deliveries that carry
                # an id (histories from before that carry none).
                delivery_id = (
                    f"{workflow.info().run_id}/{self._deliveries}"
                    if workflow.patched(HANDOFF_PATCH)
                    else ""
                )
                tasks.append(
                    asyncio.create_task(
                        self._deliver(
                            DeliverInput(
                                deliveries=deliveries,
                                rejections=rejections,
                                at=workflow.now(),
                                delivery_id=delivery_id,
                            ),
                            keys,
                        )
                    )
                )
            tasks = [task for task in tasks if not task.done()]
        # Deliveries in flight belong to this run: finish them first. Updates
        # accepted meanwhile only add to the state carried over.
        await workflow.wait_condition(
            lambda: self._running == 0 and workflow.all_handlers_finished()
        )
        workflow.continue_as_new(ProxyInput(settings=self._settings, state=state))
