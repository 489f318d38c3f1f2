"""Waiting on outside systems, where there is no event to wait on: a process
until it is ready, a sink until it holds what a test expects."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

P = TypeVar("P")


def wait_for_process(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    what: str,
    log: Callable[[], str],
    timeout_s: float,
    interval_s: float = 0.1,
) -> None:
    """Poll ``ready`` until it holds; raise RuntimeError (with ``log()``) if
    the process exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout_s:g}s:\n{log()}")
        time.sleep(interval_s)


@dataclass(frozen=True)
class Landed(Generic[P]):
    """What ``wait_until`` saw: the last progress polled (before settling),
    and the monotonic time at which ``done`` first held (or the limit)."""

    progress: P
    at: float


async def wait_until(
    progress: Callable[[], Awaitable[P]],
    done: Callable[[P], bool],
    *,
    limit_s: float,
    settle_s: float = 2.0,
    interval_s: float = 0.5,
) -> Landed[P]:
    """Poll ``progress`` until ``done`` holds (or ``limit_s`` passes), then
    wait ``settle_s`` more, so that records that should not exist have had
    time to appear."""
    deadline = time.monotonic() + limit_s
    # Polling an outside system: there is no event to wait on.
    while not done(latest := await progress()) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(interval_s)
    landed = time.monotonic()
    await asyncio.sleep(settle_s)
    return Landed(latest, landed)
