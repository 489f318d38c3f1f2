"""One log pipeline (``runtime.logging``): structlog's lines and the standard
library's (the Temporal SDK's among them) come out of the same processors,
as JSON lines with the same keys when the stream is not a terminal."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from runtime.logging import install

KEYS = {"event", "level", "timestamp", "logger"}
# What ``install`` turns off in the standard library's records.
RECORD_FLAGS = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """``install`` into a buffer; the logging set-up is restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    flags = {name: getattr(logging, name) for name in RECORD_FLAGS}
    config = structlog.get_config()
    buffer = io.StringIO()
    try:
        install(buffer, logging.INFO, console=False)
        yield buffer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in flags.items():
            setattr(logging, name, value)
        logging.captureWarnings(False)
        structlog.configure(**config)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_stdlib_and_structlog_records_are_json_with_the_same_keys(
    stream: io.StringIO,
) -> None:
    structlog.get_logger("script.example").warning("from structlog")
    logging.getLogger("temporalio.worker").warning("from the %s", "sdk")
    ours, theirs = lines(stream)
    assert set(ours) == set(theirs) == KEYS
    assert (ours["event"], ours["level"], ours["logger"]) == (
        "from structlog",
        "warning",
        "script.example",
    )
    assert (theirs["event"], theirs["level"], theirs["logger"]) == (
        "from the sdk",
        "warning",
        "temporalio.worker",
    )


def test_structlog_keys_and_exceptions_are_kept(stream: io.StringIO) -> None:
    log = structlog.get_logger("script.example")
    log.info("started", shards=4)
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("temporalio.workflow").exception("delivery failed")
    started, failed = lines(stream)
    assert started["shards"] == 4
    assert failed["level"] == "error"
    assert "ValueError: bad" in failed["exception"]


def test_other_loggers_show_warnings_and_above_only(stream: io.StringIO) -> None:
    """At info, the project's info lines show; a library's do not."""
    structlog.get_logger("script.example").info("ours")
    structlog.get_logger("script.example").debug("below the level")
    logging.getLogger("aiohttp.access").info("theirs")
    logging.getLogger("temporalio.core").warning("[sdk_core::x] retrying")
    assert [line["event"] for line in lines(stream)] == [
        "ours",
        "[sdk_core::x] retrying",
    ]
