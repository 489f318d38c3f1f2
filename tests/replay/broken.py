"""A deliberately broken job workflow for the replay tests.

In a module of its own: the sandbox re-imports the module that defines a
workflow, and this one imports nothing but the workflow code.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from actors.contracts import JobInput, JobOutcome
from actors.job import JobWorkflow


@workflow.defn(name="Job")
class ReorderedJobWorkflow(JobWorkflow):
    """The job workflow with one unguarded change: a new activity before
    anything else. Replaying real histories with it must fail."""

    @workflow.run
    async def run(self, input: JobInput) -> JobOutcome:
        await workflow.execute_activity(
            "audit", start_to_close_timeout=timedelta(seconds=5)
        )
        return await super().run(input)
