"""Retry policies and timeouts of the workflows' activities, and when a
workflow continues as new.

Every activity here is idempotent (sink writes are exactly once per record
id, updates carry ids), so retries are unlimited and the timeouts only decide
how soon the work of a dead worker is picked up again.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
# A delivery heartbeats every few seconds (actors.activities); one that stops
# belongs to a dead worker and is retried after this.
DELIVER_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
DELIVER_TIMEOUT = timedelta(minutes=5)
# Reports and publications are a few writes and updates each.
REPORT_TIMEOUT = timedelta(seconds=30)
PUBLISH_TIMEOUT = timedelta(seconds=30)
# A catch-up write: one chunk of records into one sink.
CATCH_UP_TIMEOUT = timedelta(seconds=60)
# The proxy's settings, read from a local activity at each run start.
SETTINGS_TIMEOUT = timedelta(seconds=10)


def continue_as_new_due(limit: int | None) -> bool:
    """Whether the calling workflow's run should continue as new: Temporal
    suggests it (history size or update count), or the run's history has
    reached ``limit`` events (a setting, for tests; None: only suggested).

    Workflow code only: it reads the run's ``workflow.info()``.
    """
    info = workflow.info()
    return info.is_continue_as_new_suggested() or (
        limit is not None and info.get_current_history_length() >= limit
    )
