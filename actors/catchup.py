"""SinkCatchUpWorkflow: records one sink still has to take. Orchestration
only: the write is the ``write_sink`` activity's.

A fan-out (``sinks.fanout``) starts one when a sink fails a batch the others
took, so that the delivery behind the batch completes and only this sink's
copy waits. It retries the write until the sink is back (the sink skips what
it already holds, so a write that landed before its error was seen is not
doubled), then completes. While any run, the sink is behind: list them with
``WorkflowType = 'SinkCatchUp' AND ExecutionStatus = 'Running'``.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from actors import names
    from actors.contracts import CatchUpInput
    from actors.policies import CATCH_UP_TIMEOUT, RETRY


@workflow.defn(name=names.SINK_CATCH_UP)
class SinkCatchUpWorkflow:
    @workflow.run
    async def run(self, input: CatchUpInput) -> int:
        """Write the records to their sink; returns how many were new there."""
        return await workflow.execute_activity(
            names.WRITE_SINK,
            input,
            start_to_close_timeout=CATCH_UP_TIMEOUT,
            retry_policy=RETRY,
            result_type=int,
        )
