"""Worker configuration: one frozen value built at start-up and passed down.

Its defaults are the rules' own (``actors.rules``); the worker command fills
it from flags and environment (``runtime.worker_settings``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.pipelines import DEFAULT as DEFAULT_PIPELINE
from actors.routing import DEFAULT_SHARDS
from actors.rules.job import JobSettings
from actors.rules.proxy import (
    DEFAULT_DELIVERY_BATCH,
    DEFAULT_HOLD_S,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAX_PENDING,
    DEFAULT_ROLLUP_INTERVAL_S,
    ProxySettings,
)
from actors.rules.tenant import TenantSettings
from wire.validate import DEFAULT_MAX_PAYLOAD_BYTES

DEFAULT_SINK = "file:./data/out"
# Job and tenant workflow tasks from the entity task queue one worker process
# works on at once. A process holds one core at most (GIL), so more slots
# queue tasks inside the process, where they can time out (10 s), rather than
# on the server.
DEFAULT_WORKFLOW_TASK_SLOTS = 32
# Further slots for the first tasks of jobs this process starts eagerly. An
# eager start is served only while a slot is free; kept apart, the task
# queue's backlog cannot crowd them out (``runtime.slots``, BENCHMARKS.md).
DEFAULT_EAGER_TASK_SLOTS = 480
# Entity workflows one process keeps in memory (sticky cache). A finished job
# rarely needs its cached instance again; an evicted one replays its short
# history if it does. This bounds the worker's memory (about 875 MiB peak
# with 4,000 cached job instances on the burst workload).
DEFAULT_CACHED_WORKFLOWS = 1500


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """Everything a worker process needs to know, from flags and environment."""

    shards: int = DEFAULT_SHARDS
    # Every record goes to each (``sinks.fanout``).
    sinks: tuple[str, ...] = (DEFAULT_SINK,)
    pipeline: str = DEFAULT_PIPELINE
    # Models (``module:name``) besides the built-in job_parts, which is on
    # unless job_parts is false (``actors.models``).
    models: tuple[str, ...] = ()
    job_parts: bool = True
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    # Jobs close once published and reopen for late events, unless a rolling
    # upgrade from workers that keep them open needs ``reopen=False``.
    job: JobSettings = field(default_factory=lambda: JobSettings(reopen=True))
    tenant: TenantSettings = field(default_factory=TenantSettings)
    max_pending: int = DEFAULT_MAX_PENDING
    delivery_batch: int = DEFAULT_DELIVERY_BATCH
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    # Concurrent job updates within one delivery activity.
    delivery_concurrency: int = 64
    proxy_continue_as_new_after: int | None = None
    rollup_interval_s: float = DEFAULT_ROLLUP_INTERVAL_S
    hold_s: float = DEFAULT_HOLD_S
    # A delivery holding a job.opened starts its job with the batch in the
    # job's input, eagerly, rather than as an update-with-start. Off only for
    # a rolling upgrade from workers whose jobs do not read that input.
    eager_start: bool = True
    # Job and tenant workflow tasks from the task queue one process works on
    # at once, and further slots for the jobs it starts eagerly
    # (``runtime.slots``); 0 eager slots shares the first with eager starts.
    workflow_task_slots: int = DEFAULT_WORKFLOW_TASK_SLOTS
    eager_task_slots: int = DEFAULT_EAGER_TASK_SLOTS
    cached_workflows: int = DEFAULT_CACHED_WORKFLOWS

    def proxy_settings(self, shard: int) -> ProxySettings:
        return ProxySettings(
            shard=shard,
            shards=self.shards,
            max_payload_bytes=self.max_payload_bytes,
            max_pending=self.max_pending,
            delivery_batch=self.delivery_batch,
            max_deliveries=self.max_deliveries,
            continue_as_new_after=self.proxy_continue_as_new_after,
            rollup_interval_s=self.rollup_interval_s,
            # A job's deadline counts from its first event's arrival at the
            # proxy: holding its events past the default deadline would make
            # every job time out late (a job.opened's own shorter deadline is
            # the proxy's to see: ``rules.deadline_within``).
            hold_s=min(self.hold_s, self.job.default_deadline_s),
        )
