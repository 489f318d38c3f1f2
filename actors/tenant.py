"""TenantWorkflow: one tenant's rollup. Orchestration only; the rules are in
``actors.rules.tenant``."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from actors import names
    from actors.contracts import PublishSummaryInput, TenantInput
    from actors.policies import PUBLISH_TIMEOUT, RETRY, continue_as_new_due
    from actors.rules import tenant as rules


@workflow.defn(name=names.TENANT)
class TenantWorkflow:
    """Adds up what the tenant's jobs publish and emits a summary per window.

    Rollups arrive through the ``report`` update, one per job publication,
    never per event.
    """

    @workflow.init
    def __init__(self, input: TenantInput) -> None:
        self._settings = input.settings
        self._state = input.state or rules.TenantState(tenant_id=input.tenant_id)

    @workflow.update(name=names.TENANT_REPORT)
    def report(self, batch: rules.RollupBatch) -> int:
        return rules.add(
            self._state,
            batch.deltas,
            workflow.now(),
            self._settings.summary_interval_s,
        )

    @workflow.query(name=names.TENANT_STATE)
    def state(self) -> rules.TenantState:
        return self._state

    def _should_continue_as_new(self) -> bool:
        return continue_as_new_due(self._settings.continue_as_new_after)

    @workflow.run
    async def run(self, input: TenantInput) -> None:
        state, interval = self._state, self._settings.summary_interval_s
        while True:
            await workflow.wait_condition(
                lambda: state.window_start is not None or self._should_continue_as_new()
            )
            end = rules.window_end(state, interval)
            if end is not None:
                try:
                    # Woken early only to continue-as-new; the open window
                    # travels with the state.
                    await workflow.wait_condition(
                        self._should_continue_as_new,
                        timeout=max(end - workflow.now(), timedelta(0)),
                    )
                except TimeoutError:
                    summary = rules.close_window(state, interval)
                    if summary is not None:
                        await workflow.execute_activity(
                            names.PUBLISH_SUMMARY,
                            PublishSummaryInput(summary=summary),
                            start_to_close_timeout=PUBLISH_TIMEOUT,
                            retry_policy=RETRY,
                        )
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    TenantInput(
                        tenant_id=state.tenant_id,
                        settings=self._settings,
                        state=state,
                    )
                )
