"""The worker command's settings: every flag and environment variable of
``python -m script.worker``, declared once, and the ``WorkerConfig`` they
make. The defaults are the rules' own (``actors.rules``)."""

from __future__ import annotations

from dataclasses import dataclass

from actors.pipelines import DEFAULT as DEFAULT_PIPELINE
from actors.rules.job import DEFAULT_DEADLINE_S, DEFAULT_LINGER_S, JobSettings
from actors.rules.proxy import DEFAULT_HOLD_S
from actors.rules.tenant import DEFAULT_SUMMARY_INTERVAL_S, TenantSettings
from actors.settings import (
    DEFAULT_CACHED_WORKFLOWS,
    DEFAULT_EAGER_TASK_SLOTS,
    DEFAULT_SINK,
    DEFAULT_WORKFLOW_TASK_SLOTS,
    WorkerConfig,
)
from runtime.cli import (
    SINK_ENV,
    connect_timeout_option,
    log_level_option,
    metrics_host_option,
    metrics_port_option,
    models_option,
    no_job_parts_option,
    shards_option,
)
from runtime.memory import DEFAULT_MALLOC_ARENAS
from runtime.settings import non_negative_int, option, positive_int
from sinks import redact_url


def show_sinks(value: str | tuple[str, ...]) -> str:
    """Sink URLs as ``--help`` and errors show them: passwords redacted."""
    urls = value.split(",") if isinstance(value, str) else value
    return ", ".join(redact_url(url.strip()) for url in urls)


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """What ``python -m script.worker`` is told."""

    shards: int = shards_option()
    shard: str = option(
        "all",
        flag="--shard",
        metavar="N|N,N,...|all",
        help="the shard(s) this process serves",
    )
    sinks: tuple[str, ...] = option(
        (DEFAULT_SINK,),
        flag="--sink",
        metavar="URL",
        env=SINK_ENV,
        many=True,
        # Shown redacted: it may carry a password.
        show=show_sinks,
        shown_default=DEFAULT_SINK,
        repr=False,
        help=(
            "file:DIR, redis://[:password@]host:port/db, rediss://..., "
            "postgresql://user[:password]@host:port/db[?schema=NAME] or "
            "sqlite:PATH; repeatable (the variable takes a comma-separated "
            "list): every record goes to each"
        ),
    )
    pipeline: str = option(
        DEFAULT_PIPELINE,
        flag="--pipeline",
        env="EVENTFLOW_PIPELINE",
        metavar="MODULE:FUNCTION",
        help="the function turning a job's parts into its record's analyses",
    )
    models: tuple[str, ...] = models_option()
    no_job_parts: bool = no_job_parts_option()
    job_deadline: float = option(
        DEFAULT_DEADLINE_S,
        flag="--job-deadline",
        metavar="S",
        env="EVENTFLOW_JOB_DEADLINE_S",
        help="seconds before an incomplete job times out, unless its job.opened "
        "says otherwise",
    )
    job_linger: float = option(
        DEFAULT_LINGER_S,
        flag="--job-linger",
        metavar="S",
        env="EVENTFLOW_JOB_LINGER_S",
        help="seconds after its last result version a job still takes late "
        "events (a closed job reopens for them)",
    )
    summary_interval: float = option(
        DEFAULT_SUMMARY_INTERVAL_S,
        flag="--summary-interval",
        metavar="S",
        env="EVENTFLOW_SUMMARY_INTERVAL_S",
        help="seconds per tenant.summary window",
    )
    continue_as_new_after: int | None = option(
        None,
        flag="--continue-as-new-after",
        metavar="N",
        parse=positive_int,
        shown_default="only when Temporal suggests it",
        help="history length at which every entity continues-as-new, besides "
        "when Temporal suggests it (for tests)",
    )
    proxy_hold: float = option(
        DEFAULT_HOLD_S,
        flag="--proxy-hold",
        metavar="S",
        env="EVENTFLOW_PROXY_HOLD_S",
        help="longest a job's events wait in their proxy for the rest of the "
        "job; a complete job goes at once",
    )
    no_eager_start: bool = option(
        False,
        flag="--no-eager-start",
        env="EVENTFLOW_NO_EAGER_START",
        help="deliver a new job's first events as an update-with-start, not "
        "an eager start with the events in its input (for a rolling upgrade "
        "from workers older than the eager start)",
    )
    keep_jobs_open: bool = option(
        False,
        flag="--keep-jobs-open",
        env="EVENTFLOW_KEEP_JOBS_OPEN",
        help="keep a published job open, a timer running, for its --job-linger "
        "rather than close it and reopen it for a late event (for a rolling "
        "upgrade from workers older than the reopening)",
    )
    workflow_task_slots: int = option(
        DEFAULT_WORKFLOW_TASK_SLOTS,
        flag="--workflow-task-slots",
        metavar="N",
        env="EVENTFLOW_WORKFLOW_TASK_SLOTS",
        parse=positive_int,
        help="job and tenant workflow tasks from the entity task queue this "
        "process works on at once",
    )
    eager_task_slots: int = option(
        DEFAULT_EAGER_TASK_SLOTS,
        flag="--eager-task-slots",
        metavar="N",
        env="EVENTFLOW_EAGER_TASK_SLOTS",
        parse=non_negative_int,
        help="further workflow task slots kept for jobs this process starts "
        "eagerly (their first task handed back in the start's answer, no "
        "task-queue round trip); a start is eager only while one is free; 0 "
        "shares the --workflow-task-slots with the task queue",
    )
    malloc_arenas: int = option(
        DEFAULT_MALLOC_ARENAS,
        flag="--malloc-arenas",
        metavar="N",
        env="EVENTFLOW_MALLOC_ARENAS",
        parse=non_negative_int,
        help="glibc malloc arenas this process's threads share, as "
        "MALLOC_ARENA_MAX (0: glibc's default, eight per core); fewer keep "
        "less freed memory resident (runtime.memory)",
    )
    cached_workflows: int = option(
        DEFAULT_CACHED_WORKFLOWS,
        flag="--cached-workflows",
        metavar="N",
        env="EVENTFLOW_CACHED_WORKFLOWS",
        parse=positive_int,
        help="job, tenant and catch-up workflows this process keeps in memory "
        "(the sticky cache); an evicted one is replayed from its history when "
        "it next has work. Raise it when many more jobs than this are open at "
        "once, at about 200 KB of memory each",
    )
    retire: bool = option(
        False,
        flag="--retire",
        help="after the shard count has shrunk: serve the --shard list (shards "
        "that no longer exist) until their proxies have delivered and reported "
        "everything they hold and no workflow is left on their task queues, "
        "then close them and exit",
    )
    connect_timeout: float = connect_timeout_option()
    metrics_port: int | None = metrics_port_option()
    metrics_host: str = metrics_host_option()
    log_level: str = log_level_option()

    def worker_config(self) -> WorkerConfig:
        """The value the activities and proxies are tuned by."""
        return WorkerConfig(
            shards=self.shards,
            sinks=self.sinks,
            pipeline=self.pipeline,
            models=self.models,
            job_parts=not self.no_job_parts,
            job=JobSettings(
                default_deadline_s=self.job_deadline,
                linger_s=self.job_linger,
                continue_as_new_after=self.continue_as_new_after,
                reopen=not self.keep_jobs_open,
            ),
            tenant=TenantSettings(
                summary_interval_s=self.summary_interval,
                continue_as_new_after=self.continue_as_new_after,
            ),
            proxy_continue_as_new_after=self.continue_as_new_after,
            hold_s=self.proxy_hold,
            eager_start=not self.no_eager_start,
            workflow_task_slots=self.workflow_task_slots,
            eager_task_slots=self.eager_task_slots,
            cached_workflows=self.cached_workflows,
        )
