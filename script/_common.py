"""What every entry point shares: logging set-up and a few argument types."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import structlog
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from actors.config import default_shards
from wire.synthetic import WorkloadSpec


def configure_logging(level: str | None = None) -> None:
    """structlog to stderr: readable on a terminal, JSON lines otherwise.

    stdout stays free for the commands' own output (records, summaries).
    """
    name = (level or os.environ.get("EVENTFLOW_LOG_LEVEL") or "info").upper()
    numeric = logging.getLevelNamesMapping().get(name, logging.INFO)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer()
    else:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The SDK logs through the standard library (workflow.logger too).
    logging.basicConfig(
        level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(message)s"
    )
    # The SDK's native core prints its own warnings (an RPC retried while the
    # server is away) to stdout unless they are forwarded: that would corrupt
    # the commands' output (emit --json). Forward them to stderr as well.
    Runtime.set_default(
        Runtime(
            telemetry=TelemetryConfig(
                logging=LoggingConfig(
                    filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                    forwarding=LogForwardingConfig(
                        logger=logging.getLogger("temporalio.core")
                    ),
                )
            )
        ),
        error_if_already_set=False,
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text}")
    return value


def exit_now(code: int = 0) -> None:
    """Exit without interpreter teardown, after flushing output.

    The Temporal client's native runtime keeps threads that can abort the
    interpreter while it finalizes ("PyGILState_Release ... must be current",
    sdk-python issue 300). A short-lived client command has nothing left to
    clean up once its output is flushed, so it skips the teardown.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def add_connect_timeout_argument(parser: argparse.ArgumentParser) -> None:
    """``--connect-timeout``: how long a command waits for Temporal at start."""
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=60.0,
        help="seconds to keep retrying while Temporal is unreachable at start "
        "(default %(default)s)",
    )


def add_shards_argument(parser: argparse.ArgumentParser) -> None:
    """``--shards``: the one setting every process must agree on."""
    parser.add_argument(
        "--shards",
        type=positive_int,
        default=default_shards(),
        help="shard count, the same for every process (env EVENTFLOW_SHARDS; "
        "default %(default)s)",
    )


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
