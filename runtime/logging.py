"""Logging set-up for every process."""

from __future__ import annotations

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
