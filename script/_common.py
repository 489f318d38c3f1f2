"""What every entry point shares: logging set-up and a few argument types."""

from __future__ import annotations

import logging
import os
import sys

import structlog


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
