"""``send_batch_within``: retries what can be retried, within a deadline.

The client is a stand-in: these pin the retry and deadline rules without a
server (the integration tests run the real thing)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from actors.names import BACKPRESSURE
from actors.rules.proxy import IngestAck, IngestBatch
from ingress.sender import SendTimeout, is_backpressure, send_batch_within


def backpressure() -> WorkflowUpdateFailedError:
    return WorkflowUpdateFailedError(ApplicationError("full", type=BACKPRESSURE))


def unreachable() -> RPCError:
    return RPCError("tcp connect error", RPCStatusCode.UNAVAILABLE, b"")


class FakeClient:
    """Fails with ``errors`` in turn, then acks; or hangs when told to."""

    def __init__(self, errors: list[BaseException], *, hang: bool = False) -> None:
        self.errors = list(errors)
        self.hang = hang
        self.calls: list[dict[str, Any]] = []

    async def execute_update_with_start_workflow(self, *args: Any, **kwargs: Any):
        self.calls.append(kwargs)
        if self.hang:
            await asyncio.sleep(3600)
        if self.errors:
            raise self.errors.pop(0)
        return IngestAck(accepted=1)


async def send(client: FakeClient, **options: Any) -> IngestAck:
    return await send_batch_within(
        client,  # type: ignore[arg-type]
        0,
        4,
        IngestBatch(),
        **{"deadline_s": 5.0, "max_backoff_s": 0.01, **options},
    )


async def test_back_pressure_and_an_unreachable_server_are_retried() -> None:
    seen: list[BaseException] = []
    client = FakeClient([backpressure(), unreachable()])
    assert await send(client, on_retry=seen.append) == IngestAck(accepted=1)
    assert len(client.calls) == 3
    assert [is_backpressure(e) for e in seen] == [True, False]
    # One update id for every attempt: a retry that lands twice counts once.
    assert len({call["id"] for call in client.calls}) == 1
    assert all(call["rpc_timeout"].total_seconds() <= 5 for call in client.calls)


async def test_gives_up_at_the_deadline_and_says_why() -> None:
    client = FakeClient([backpressure()] * 1000)
    with pytest.raises(SendTimeout, match="WorkflowUpdateFailedError"):
        await send(client, deadline_s=0.2)
    assert len(client.calls) > 1


async def test_a_hung_call_is_cut_at_the_deadline() -> None:
    with pytest.raises(SendTimeout):
        await asyncio.wait_for(send(FakeClient([], hang=True), deadline_s=0.1), 5)


async def test_a_permanent_failure_is_raised_at_once() -> None:
    denied = RPCError("no", RPCStatusCode.PERMISSION_DENIED, b"")
    client = FakeClient([denied])
    with pytest.raises(RPCError):
        await send(client)
    assert len(client.calls) == 1


def test_resource_exhausted_counts_as_back_pressure() -> None:
    exhausted = RPCError("too many updates", RPCStatusCode.RESOURCE_EXHAUSTED, b"")
    assert is_backpressure(exhausted)
    assert is_backpressure(backpressure())
    assert not is_backpressure(unreachable())
