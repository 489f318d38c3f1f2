"""Logging set-up for every process: one pipeline for every log line.

structlog's loggers hand their event dicts to the standard library, and one
handler on the root logger renders everything with the same processors
(structlog's ``ProcessorFormatter``): our own structlog lines, the standard
library's and the Temporal SDK's records (``workflow.logger``,
``activity.logger``, and the SDK core's logs forwarded to
``temporalio.core``). On stderr: JSON lines, or the console renderer on a
terminal. Every line has ``event``, ``level``, ``timestamp`` and ``logger``.
stdout stays free for the commands' own output (records, summaries).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
from typing import TextIO

import stamina
import structlog
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

LOG_LEVEL_ENV = "EVENTFLOW_LOG_LEVEL"
DEFAULT_LOG_LEVEL = "info"

# Processors every line goes through, wherever it was logged.
SHARED_PROCESSORS: tuple[structlog.types.Processor, ...] = (
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
)


def level_number(level: str | None) -> int:
    """The stdlib level of a name ("debug", "WARNING"...); unknown names and
    None mean the environment's level, else info."""
    name = (level or os.environ.get(LOG_LEVEL_ENV) or DEFAULT_LOG_LEVEL).upper()
    return logging.getLevelNamesMapping().get(name, logging.INFO)


class _Admit(logging.Filter):
    """structlog's own lines have passed its level filter already; other
    loggers' (the SDK, aiohttp, redis...) need at least ``foreign_level``:
    their info lines are noise at the project's info level."""

    def __init__(self, foreign_level: int) -> None:
        super().__init__()
        self.foreign_level = foreign_level

    def filter(self, record: logging.LogRecord) -> bool:
        return hasattr(record, "_logger") or record.levelno >= self.foreign_level


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler ``install`` puts on the root logger (and replaces
    when called again)."""


def install(
    stream: TextIO, level: int, *, console: bool | None = None
) -> logging.Handler:
    """Route structlog and the standard library through one formatter that
    writes to ``stream``: the console renderer when ``console`` (by default:
    when ``stream`` is a terminal), JSON lines otherwise.

    structlog's loggers log at ``level``; the standard library's at
    ``level`` or warning, whichever is higher.
    """
    if console is None:
        console = stream.isatty()
    renderer: structlog.types.Processor
    final: list[structlog.types.Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta
    ]
    if console:
        renderer = structlog.dev.ConsoleRenderer()
    else:
        final.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    handler = _Handler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=list(SHARED_PROCESSORS),
            processors=[*final, renderer],
        )
    )
    handler.addFilter(_Admit(max(level, logging.WARNING)))
    # The renderers use none of a record's caller, thread or process fields:
    # not gathering them (the logging HOWTO's "Optimization") halves what a
    # line costs on its way through the standard library.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Python's warnings become log lines too, not plain text among the JSON.
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            *SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    return handler


def configure_logging(
    level: str | None = None, *, sdk_metrics: str | None = None
) -> None:
    """Every log line to stderr through one structlog pipeline: readable on
    a terminal, JSON lines otherwise. A fatal signal (a crash in native code)
    prints every thread's Python stack to stderr first (``faulthandler``).

    ``level`` is a level name; None takes ``EVENTFLOW_LOG_LEVEL``, else info.
    ``sdk_metrics``: an address (``host:port``) for the SDK's own Prometheus
    exporter (its runtime metrics and the workflows' ``metric_meter``); None:
    no SDK metrics. It shares the one Runtime with the log forwarding, so it
    is set here, before any client exists.
    """
    install(sys.stderr, level_number(level))
    faulthandler.enable(file=sys.stderr, all_threads=True)
    # The retry loops log their own retries, at the level each warrants (the
    # ingress's are debug): stamina's default hook would log every retry as
    # a warning, with the repr of its error.
    stamina.instrumentation.set_on_retry_hooks([])
    # The SDK's native core prints its own warnings (an RPC retried while the
    # server is away) to stdout unless they are forwarded: that would corrupt
    # the commands' output (emit --json). Forward them to the pipeline above.
    Runtime.set_default(
        Runtime(
            telemetry=TelemetryConfig(
                logging=LoggingConfig(
                    filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                    forwarding=LogForwardingConfig(
                        logger=logging.getLogger("temporalio.core")
                    ),
                ),
                metrics=None
                if sdk_metrics is None
                else PrometheusConfig(
                    bind_address=sdk_metrics, durations_as_seconds=True
                ),
            )
        ),
        error_if_already_set=False,
    )
