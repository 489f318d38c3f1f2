"""What every command line shares: the options several commands take (each
declared once, see ``runtime.settings``), the synthetic workload's
options, and a fast exit."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

from actors.models import EXAMPLE as EXAMPLE_MODEL
from actors.routing import DEFAULT_SHARDS
from runtime import tracing
from runtime.logging import DEFAULT_LOG_LEVEL, LOG_LEVEL_ENV, configure_logging
from runtime.settings import integer, option, positive_int
from wire.synthetic import WorkloadSpec

__all__ = [
    "SHARDS_ENV",
    "SINK_ENV",
    "ClientSettings",
    "add_workload_arguments",
    "configure_logging",
    "connect_timeout_option",
    "exit_now",
    "log_level_option",
    "metrics_host_option",
    "metrics_port_option",
    "models_option",
    "no_job_parts_option",
    "positive_int",
    "shards_option",
    "start_tracing",
    "workload_from",
]

# Variables more than one command reads.
SHARDS_ENV = "EVENTFLOW_SHARDS"
SINK_ENV = "EVENTFLOW_SINK"  # the workers' sink; script.consume's default --from


def exit_now(code: int = 0) -> None:
    """Exit without interpreter teardown, after flushing output.

    The Temporal client's native runtime keeps threads that can abort the
    interpreter while it finalizes ("PyGILState_Release ... must be current",
    sdk-python issue 300). A short-lived client command has nothing left to
    clean up once its output is flushed, so it skips the teardown.
    """
    tracing.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start_tracing(service: str) -> None:
    """Traces for this command, when the OTLP variables ask for them
    (``runtime.tracing``); a misconfiguration ends the command with its
    reason."""
    try:
        tracing.configure_tracing(service)
    except tracing.TracingMisconfigured as exc:
        print(f"error: {exc}", file=sys.stderr)
        exit_now(2)


def shards_option() -> Any:
    """``--shards``: the one setting every process must agree on."""
    return option(
        DEFAULT_SHARDS,
        flag="--shards",
        metavar="M",
        env=SHARDS_ENV,
        parse=positive_int,
        help="shard count, the same for every process",
    )


def connect_timeout_option() -> Any:
    """``--connect-timeout``: how long a command waits for Temporal at start."""
    return option(
        60.0,
        flag="--connect-timeout",
        metavar="S",
        help="seconds to keep retrying while Temporal is unreachable at start",
    )


def metrics_port_option() -> Any:
    """``--metrics-port``: where ``GET /metrics`` is served; off by default."""
    return option(
        None,
        flag="--metrics-port",
        env="EVENTFLOW_METRICS_PORT",
        parse=integer,
        metavar="PORT",
        help="serve Prometheus metrics (GET /metrics: this process's and the "
        "Temporal SDK's) on this port; off unless set",
    )


def metrics_host_option() -> Any:
    """``--metrics-host``: the address the metrics endpoint listens on."""
    return option(
        "127.0.0.1",
        flag="--metrics-host",
        env="EVENTFLOW_METRICS_HOST",
        metavar="HOST",
        help="address the metrics endpoint listens on (0.0.0.0 for every interface)",
    )


def models_option() -> Any:
    """``--model``: the models whose tables each result version fills."""
    return option(
        (),
        flag="--model",
        env="EVENTFLOW_MODELS",
        metavar="MODULE:NAME",
        many=True,
        shown_default="none besides job_parts",
        help="a model: a table of rows each result version becomes "
        "(repeatable; the variable takes a comma-separated list), e.g. "
        f"{EXAMPLE_MODEL}",
    )


def no_job_parts_option() -> Any:
    """``--no-job-parts``: leave out the built-in model."""
    return option(
        False,
        flag="--no-job-parts",
        env="EVENTFLOW_NO_JOB_PARTS",
        help="do not write the built-in job_parts table (one row per part)",
    )


def log_level_option(*, choices: tuple[str, ...] | None = None) -> Any:
    """``--log-level``: debug, info, warning or error."""
    return option(
        DEFAULT_LOG_LEVEL,
        flag="--log-level",
        env=LOG_LEVEL_ENV,
        choices=choices,
        metavar="LEVEL",
        help="debug, info, warning or error; other libraries' loggers show "
        "warnings and above",
    )


@dataclass(frozen=True, kw_only=True)
class ClientSettings:
    """What a command that talks to the shard proxies is told
    (``script.emit``; the worker's settings have the same options)."""

    shards: int = shards_option()
    connect_timeout: float = connect_timeout_option()
    log_level: str = log_level_option()


def add_workload_arguments(
    group: argparse._ActionsContainer, *, tenants: int, jobs: int
) -> None:
    """The synthetic workload's options (see ``wire.synthetic.WorkloadSpec``)."""
    group.add_argument("--tenants", type=positive_int, default=tenants)
    group.add_argument("--jobs", type=positive_int, default=jobs)
    group.add_argument("--types", type=positive_int, default=3)
    group.add_argument("--parts", type=positive_int, default=2)
    group.add_argument("--duplicates", type=float, default=0.0)
    group.add_argument("--early", type=float, default=0.0)
    group.add_argument("--invalid", type=float, default=0.0)
    group.add_argument("--seed", type=int, default=1)
    group.add_argument(
        "--run",
        default=None,
        help="prefix for generated job ids, so that runs against one server "
        "never share a job",
    )


def workload_from(args: argparse.Namespace, *, run: str) -> WorkloadSpec:
    return WorkloadSpec(
        tenants=args.tenants,
        jobs=args.jobs,
        types=args.types,
        parts=args.parts,
        duplicates=args.duplicates,
        early=args.early,
        invalid=args.invalid,
        seed=args.seed,
        run=run,
    )
