"""The batching sender: validates raw events at the edge and sends them to
their shard proxies, one ``ingest`` update per batch and shard."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

import stamina
import structlog
from opentelemetry.trace import Span, SpanKind
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from actors import names, routing
from actors.contracts import ProxyInput
from actors.rules.proxy import (
    MAX_BATCH_BYTES,
    IngestAck,
    IngestBatch,
    ProxySettings,
    recent_key,
)
from wire import Event, Limits, Rejection, parse_event, traces
from wire.batching import MicroBatcher, QueueFull
from wire.validate import RAW_KEEP_BYTES

log = structlog.get_logger(__name__)

BACKPRESSURE = names.BACKPRESSURE


@dataclass
class SendSummary:
    """Counts over everything sent, as the proxies reported them."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0

    def add(self, ack: IngestAck) -> None:
        self.accepted += ack.accepted
        self.duplicates += ack.duplicates
        self.rejected += ack.rejected

    def as_dict(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
        }


class EventSender:
    """Validates raw events at the edge and sends them in micro-batches, one
    ``ingest`` update per batch and shard.

    A batch is sent when it holds ``batch_size`` events or ``max_batch_bytes``
    bytes, ``max_delay_s`` after its first event (so a slow trickle is not held
    back waiting for a full batch), or when ``flush`` is called. Up to
    ``in_flight`` updates per shard run at once (Temporal allows 10 per
    workflow); while they are all busy and the next batch is full, ``send``
    waits. A send is retried until the proxy accepts it, so once ``flush``
    returns every event is acknowledged: accepted, recognised as a duplicate,
    or dead-lettered. A failed send is raised by the next ``send`` or
    ``flush``.
    """

    def __init__(
        self,
        client: Client,
        *,
        shards: int,
        limits: Limits = Limits(),
        batch_size: int = 500,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        in_flight: int = 4,
        max_delay_s: float = 0.2,
        on_ack: Callable[[int, IngestAck], None] | None = None,
    ) -> None:
        self._client = client
        self._shards = shards
        self._limits = limits
        self._batcher: MicroBatcher[int, Event | Rejection, None] = MicroBatcher(
            self._deliver,
            window_s=max_delay_s,
            max_items=batch_size,
            max_bytes=max_batch_bytes,
            in_flight=in_flight,
            # Room for one full batch waiting for a slot: past it the producer
            # waits (back-pressure) rather than buffering without bound.
            max_queued=batch_size,
            max_queued_bytes=max_batch_bytes,
        )
        self._error: BaseException | None = None
        self._on_ack = on_ack
        self.summary = SendSummary()

    async def send(self, raw: bytes) -> None:
        """Queue one raw JSON event; waits while its shard has a full batch
        and no free slot."""
        if self._error is not None:
            raise self._error
        self.summary.sent += 1
        item = parse_event(raw, self._limits)
        if isinstance(item, Rejection):
            shard = (
                routing.shard_of(item.tenant_id, item.job_id, self._shards)
                if item.tenant_id and item.job_id
                else routing.raw_shard(raw, self._shards)
            )
            size = min(len(raw), RAW_KEEP_BYTES)
        else:
            shard = routing.shard_of(item.tenant_id, item.job_id, self._shards)
            size = len(raw)
        # One list append per event (``add``: no future); ``_deliver`` records
        # a failure for the next send or flush.
        try:
            self._batcher.add(shard, item, size)
        except QueueFull:  # a full batch waits for a slot: so does the producer
            await self._batcher.wait_for_room(shard)
            self._batcher.add(shard, item, size)

    async def send_all(self, lines: AsyncIterable[bytes]) -> SendSummary:
        async for line in lines:
            if line.strip():
                await self.send(line.strip())
        await self.flush()
        return self.summary

    async def flush(self) -> None:
        """Send every partial batch and wait until all are acknowledged."""
        await self._batcher.flush()
        if self._error is not None:
            raise self._error

    async def _deliver(self, shard: int, items: list[Event | Rejection]) -> None:
        rejections = [i for i in items if isinstance(i, Rejection)]
        # Rejections are rare: most batches need no second pass.
        events = (
            [i for i in items if not isinstance(i, Rejection)]
            if rejections
            else cast("list[Event]", items)
        )
        try:
            with traces.span(
                "eventflow.send",
                kind=SpanKind.PRODUCER,
                attributes={"eventflow.shard": shard},
            ) as span:
                batch = IngestBatch(
                    events=events, rejections=rejections, trace=traces.traceparent()
                )
                ack = await send_batch(self._client, shard, self._shards, batch)
                record_ack(span, batch, ack)
            self.summary.add(ack)
            if self._on_ack is not None:
                self._on_ack(len(items), ack)
        except BaseException as exc:  # surfaced by the next send or flush
            self._error = exc
            if not isinstance(exc, Exception):
                raise


def record_ack(span: Span, batch: IngestBatch, ack: IngestAck) -> None:
    """What a sent batch held and what its proxy made of it, on its span."""
    if span.is_recording():
        span.set_attributes(
            {
                "eventflow.events": len(batch.events),
                "eventflow.rejections": len(batch.rejections),
                "eventflow.accepted": ack.accepted,
                "eventflow.duplicates": ack.duplicates,
                "eventflow.refused": ack.rejected,
            }
        )


def _update_id(batch: IngestBatch) -> str:
    # The same batch retried carries the same update id, so Temporal applies
    # it once within a run; across runs the event ids de-duplicate. Event ids
    # are unique per job only, so each counts with its tenant and job: two
    # batches of different jobs that share event ids (two tenants' "e1") must
    # not share an update id, or Temporal answers the second with the first's
    # outcome and its events are lost though acknowledged.
    digest = hashlib.sha256()
    for event in batch.events:
        digest.update(recent_key(event).encode())
        digest.update(b"\0")
    for rejection in batch.rejections:
        digest.update(rejection.rejection_id.encode())
        digest.update(b"\0")
    return "ingest-" + digest.hexdigest()[:32]


def _proxy_start(shard: int, shards: int) -> WithStartWorkflowOperation:
    # Used once per call: an operation object cannot be reused.
    return WithStartWorkflowOperation(
        names.PROXY,
        # The proxy reads its settings from the workers at each run start;
        # the shard and the shard count are all a start needs.
        ProxyInput(settings=ProxySettings(shard=shard, shards=shards)),
        id=routing.proxy_id(shard),
        task_queue=routing.task_queue(shard),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


# RPC failures that no retry will cure.
_PERMANENT = {
    RPCStatusCode.INVALID_ARGUMENT,
    RPCStatusCode.PERMISSION_DENIED,
    RPCStatusCode.UNAUTHENTICATED,
    RPCStatusCode.UNIMPLEMENTED,
}


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, WorkflowUpdateFailedError):
        cause = exc.cause
        return isinstance(cause, ApplicationError) and cause.type == BACKPRESSURE
    if isinstance(exc, RPCError):
        return exc.status not in _PERMANENT
    return isinstance(exc, WorkflowUpdateRPCTimeoutOrCancelledError)


async def send_batch(
    client: Client,
    shard: int,
    shards: int,
    batch: IngestBatch,
    *,
    max_backoff_s: float = 2.0,
) -> IngestAck:
    """Send one batch to its shard's proxy, retrying until it is accepted.

    Retries on back-pressure (the proxy's outbox is full or it is continuing
    as new), on an update that raced a continue-as-new, and while the server
    is unreachable; raises on a failure that no retry can cure.
    """
    return await send_batch_within(
        client, shard, shards, batch, deadline_s=None, max_backoff_s=max_backoff_s
    )


class SendTimeout(TimeoutError):
    """A batch was not accepted within its deadline; ``last_error`` says why
    (None when the one attempt simply ran out of time)."""

    def __init__(self, shard: int, deadline_s: float, last_error: str | None) -> None:
        super().__init__(
            f"shard {shard}: not accepted within {deadline_s:g}s"
            + (f" (last error: {last_error})" if last_error else "")
        )
        self.shard = shard
        self.last_error = last_error


def is_backpressure(exc: BaseException) -> bool:
    """Whether a failed send was the proxy refusing more work for now."""
    if isinstance(exc, WorkflowUpdateFailedError):
        cause = exc.cause
        return isinstance(cause, ApplicationError) and cause.type == BACKPRESSURE
    return isinstance(exc, RPCError) and exc.status == RPCStatusCode.RESOURCE_EXHAUSTED


_HARD_CUT_GRACE_S = 1.0
# The first backoff between attempts (and its most jitter); it doubles from
# there up to the caller's ``max_backoff_s``.
SEND_WAIT_INITIAL_S = 0.05


def _settle(start: WithStartWorkflowOperation) -> None:
    # A failed update-with-start also fails the start operation's own future,
    # which nobody awaits here; reading its error keeps asyncio from logging
    # "Future exception was never retrieved" for every failed attempt. (The
    # SDK has no public way to ask whether it is done.)
    future = getattr(start, "_workflow_handle", None)
    if isinstance(future, asyncio.Future) and future.done() and not future.cancelled():
        future.exception()


async def send_batch_within(
    client: Client,
    shard: int,
    shards: int,
    batch: IngestBatch,
    *,
    deadline_s: float | None,
    max_backoff_s: float = 1.0,
    on_retry: Callable[[BaseException], None] | None = None,
) -> IngestAck:
    """``send_batch`` with a deadline: retries what ``send_batch`` retries,
    but raises ``SendTimeout`` once ``deadline_s`` has passed (None: no
    deadline, retry until accepted).

    For senders that answer someone who can retry (the HTTP ingress answers
    503): a batch that lands after its deadline is harmless, because the
    update id and the event ids de-duplicate the retry. Each attempt's RPC
    carries the time left, so the server gives up on it too (a call that
    hangs regardless is cut a second after the deadline). ``on_retry`` sees
    every retried error (the ingress uses it to notice back-pressure).
    """
    update_id = _update_id(batch)
    loop = asyncio.get_running_loop()
    deadline = None if deadline_s is None else loop.time() + deadline_s
    last_error: str | None = None
    retries = 0

    def retry(exc: Exception) -> bool:
        nonlocal last_error, retries
        if not _retryable(exc):
            return False
        last_error = type(exc).__name__
        retries += 1
        if on_retry is not None:
            on_retry(exc)
        # Quiet where every request retries (the ingress), visible for
        # senders without a deadline, which may wait long.
        (log.debug if deadline is not None else log.info)(
            "proxy update retried",
            shard=shard,
            error=last_error,
            cause=str(getattr(exc, "cause", None) or exc)[:200],
            retries=retries,
        )
        return True

    def timed_out() -> SendTimeout:
        return SendTimeout(shard, deadline_s or 0.0, last_error)

    # stamina retries (jittered exponential backoff, stopping at the
    # deadline). What it cannot express stays here: each attempt's RPC
    # timeout is the time left, and the hard cut. The RPC's own deadline
    # normally ends a slow attempt; the cut a moment later covers the
    # client's internal retries, and a backoff that would outlast the
    # deadline, so a batch gives up within _HARD_CUT_GRACE_S of it.
    wait_initial = min(SEND_WAIT_INITIAL_S, max_backoff_s)
    try:
        async with asyncio.timeout_at(
            None if deadline is None else deadline + _HARD_CUT_GRACE_S
        ):
            async for attempt in stamina.retry_context(
                on=retry,
                attempts=None,
                timeout=deadline_s,
                wait_initial=wait_initial,
                wait_max=max_backoff_s,
                wait_jitter=wait_initial,
            ):
                with attempt:
                    left = None if deadline is None else deadline - loop.time()
                    if left is not None and left <= 0:
                        raise timed_out()
                    return await _attempt(client, shard, shards, batch, update_id, left)
    except SendTimeout:
        raise
    except TimeoutError:  # the hard cut
        raise timed_out() from None
    except (
        WorkflowUpdateFailedError,
        WorkflowUpdateRPCTimeoutOrCancelledError,
        RPCError,
    ) as exc:
        if deadline is not None and _retryable(exc):  # retried until the deadline
            raise timed_out() from exc
        raise
    raise AssertionError("unreachable: stamina returns or raises")


async def _attempt(
    client: Client,
    shard: int,
    shards: int,
    batch: IngestBatch,
    update_id: str,
    left: float | None,
) -> IngestAck:
    """One ``ingest`` update-with-start, its RPC given ``left`` seconds."""
    start = _proxy_start(shard, shards)
    try:
        return await client.execute_update_with_start_workflow(
            names.PROXY_INGEST,
            batch,
            start_workflow_operation=start,
            result_type=IngestAck,
            id=update_id,
            rpc_timeout=None if left is None else timedelta(seconds=left),
        )
    finally:
        _settle(start)
