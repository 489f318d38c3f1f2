"""The retry loops on stamina: connecting while Temporal is away, and
retiring a proxy that pushes back. Stand-ins for the client; stamina's
testing mode takes the waits out (the integration tests run the real
backoff)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stamina
import structlog
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

import runtime.client
from actors.names import BACKPRESSURE
from runtime.client import connect_within
from runtime.retire import retire_proxy


@pytest.fixture
def no_waits() -> Iterator[None]:
    """Retries at once, at most five attempts."""
    with stamina.set_testing(True, attempts=5):
        yield


def failing_connect(monkeypatch, failures: int) -> list[int]:
    calls: list[int] = []

    async def connect(**overrides: Any) -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise RuntimeError("Failed client connect: connection refused")
        return "client"

    monkeypatch.setattr(runtime.client, "connect", connect)
    return calls


async def test_connecting_retries_while_the_server_is_away(
    monkeypatch, no_waits
) -> None:
    calls = failing_connect(monkeypatch, failures=2)
    with structlog.testing.capture_logs() as logs:
        assert await connect_within(60) == "client"
    assert len(calls) == 3
    retried = [e for e in logs if e["event"] == "Temporal not reachable yet; retrying"]
    assert [e["log_level"] for e in retried] == ["warning", "warning"]


async def test_connecting_gives_up_with_a_connection_error(
    monkeypatch, no_waits
) -> None:
    failing_connect(monkeypatch, failures=100)
    with pytest.raises(ConnectionError, match=r"Temporal not reachable within 7s"):
        await connect_within(7)


async def test_a_zero_timeout_tries_once(monkeypatch) -> None:
    calls = failing_connect(monkeypatch, failures=100)
    with pytest.raises(ConnectionError):
        await connect_within(0)
    assert len(calls) == 1


class Description:
    status = WorkflowExecutionStatus.RUNNING


class FakeHandle:
    """A running proxy whose ``retire`` update fails with ``errors`` in
    turn, then reports what it held."""

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = list(errors)
        self.updates = 0

    async def describe(self) -> Description:
        return Description()

    async def execute_update(self, name: str, *, result_type: type) -> int:
        self.updates += 1
        if self.errors:
            raise self.errors.pop(0)
        return 7


class FakeClient:
    def __init__(self, handle: FakeHandle) -> None:
        self.handle = handle

    def get_workflow_handle(self, workflow_id: str) -> FakeHandle:
        return self.handle


async def test_retiring_retries_back_pressure_and_a_run_ending_under_it(
    no_waits,
) -> None:
    handle = FakeHandle(
        [
            WorkflowUpdateFailedError(ApplicationError("full", type=BACKPRESSURE)),
            RPCError("workflow run ended", RPCStatusCode.NOT_FOUND, b""),
        ]
    )
    assert await retire_proxy(FakeClient(handle), 3) == 7  # type: ignore[arg-type]
    assert handle.updates == 3


async def test_retiring_raises_what_no_retry_cures(no_waits) -> None:
    denied = RPCError("no", RPCStatusCode.PERMISSION_DENIED, b"")
    handle = FakeHandle([denied])
    with pytest.raises(RPCError):
        await retire_proxy(FakeClient(handle), 3)  # type: ignore[arg-type]
    assert handle.updates == 1
