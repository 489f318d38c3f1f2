"""The ingress service: its settings, the batcher wired to the shard proxies,
and readiness. The HTTP routes in ``ingress.routes`` drive it."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from aiohttp import web
from opentelemetry.trace import SpanKind
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from actors import names, routing
from actors.rules.proxy import (
    DEFAULT_MAX_PENDING,
    MAX_BATCH_BYTES,
    IngestAck,
    IngestBatch,
)
from ingress.envelope import shard_for
from ingress.sender import is_backpressure, record_ack, send_batch_within
from wire import Event, Limits, Rejection, traces
from wire.batching import Closed, MicroBatcher, QueueFull
from wire.validate import RAW_KEEP_BYTES

log = structlog.get_logger("ingress")

# An item and the traceparent of the request it came in (None: not traced).
Traced = tuple[Event | Rejection, str | None]

# Pub/Sub's largest message is 10 MB; base64 makes it 13.4 MB in a push
# envelope. Refusing a real Pub/Sub message with 413 would have it redelivered
# until it expires, so the default body limit lets every one in (and an
# oversize event is then dead-lettered like any other invalid one).
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# The variable holding the shared access token (else a file does). Never a
# flag: a command line is visible to every local user.
TOKEN_ENV = "EVENTFLOW_INGRESS_TOKEN"


@dataclass(frozen=True, kw_only=True)
class IngressSettings:
    """Everything the ingress is tuned by, built once at start-up.

    Attributes:
        shards: the shard count, the same in every process.
        limits: event limits, as at every other entry point.
        max_body_bytes: a request body past this gets 413.
        token: the shared access token; None lets every request in.
        batch_window_s: how long a shard's batch waits for company after its
            first item.
        batch_max_events: a batch is sent at once when it holds this many.
        batch_max_bytes: ...or this many bytes (see
            ``actors.rules.proxy.MAX_BATCH_BYTES``: a proxy's workflow task
            carries every update it is given back to the server).
        in_flight: updates in flight per shard. One by default: items that
            arrive meanwhile gather into the next, larger batch (fewer
            updates cost the server less; measured here, more in flight did
            not help), and Temporal's limit of 10 in-flight updates per
            workflow is shared by every ingress replica and emitter.
        max_queued: items waiting per shard past which requests get 503 at
            once.
        ack_timeout_s: how long a request waits for its update before 503.
        retry_after_s: the ``Retry-After`` of a 503.
        ready_max_pending: a proxy with this many undelivered events counts
            as pushing back for readiness (the proxies' ``max_pending``).
        ready_timeout_s: how long a readiness check waits for Temporal.
    """

    shards: int = routing.DEFAULT_SHARDS
    limits: Limits = field(default_factory=Limits)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    token: str | None = None
    batch_window_s: float = 0.005
    batch_max_events: int = 500
    batch_max_bytes: int = MAX_BATCH_BYTES
    in_flight: int = 1
    max_queued: int = 20_000
    ack_timeout_s: float = 8.0
    retry_after_s: int = 2
    ready_max_pending: int = DEFAULT_MAX_PENDING
    ready_timeout_s: float = 3.0


@dataclass
class _ShardHealth:
    last_ok: float = float("-inf")
    last_pushback: float = float("-inf")


# A shard that pushed back (or accepted) this recently needs no query.
_RECENT_S = 10.0
_READY_CACHE_S = 1.0


@dataclass(frozen=True)
class Readiness:
    ready: bool
    problems: tuple[str, ...] = ()


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    DEAD_LETTERED = "dead_lettered"
    REJECTED = "rejected"  # /events: 400, and dead-lettered
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"
    EMPTY = "empty"
    REFUSED = "refused"  # no such route or method
    OK = "ok"
    NOT_READY = "not_ready"
    ERROR = "error"


class Unavailable(Exception):
    """The ingress cannot take this item now (closing, a shard's queue is
    full, or its update failed or timed out); the request gets 503."""


class Ingress:
    """The service's state: the client, the batcher, shard health.

    Built by ``create_app``; handlers reach it through the application.
    """

    def __init__(self, client: Client, settings: IngressSettings) -> None:
        self.client = client
        self.settings = settings
        self._health = [_ShardHealth() for _ in range(settings.shards)]
        # Per shard: one update per window (or per full batch), ``in_flight``
        # at a time; a request whose shard has ``max_queued`` items waiting
        # gets 503 at once rather than piling up while Temporal is away.
        # Items travel with the traceparent of the request that brought them.
        self.batcher: MicroBatcher[int, Traced, IngestAck] = MicroBatcher(
            self._send,
            window_s=settings.batch_window_s,
            max_items=settings.batch_max_events,
            max_bytes=settings.batch_max_bytes,
            in_flight=settings.in_flight,
            max_queued=settings.max_queued,
        )
        self._ready: Readiness | None = None
        self._ready_at = float("-inf")
        self._ready_check: asyncio.Task[Readiness] | None = None

    async def _send(self, shard: int, items: list[Traced]) -> IngestAck:
        # The batch continues the first request's trace and links the others.
        with traces.continuing(
            "eventflow.send",
            [trace for _, trace in items],
            kind=SpanKind.PRODUCER,
            attributes={"eventflow.shard": shard},
        ) as span:
            batch = IngestBatch(
                events=[i for i, _ in items if not isinstance(i, Rejection)],
                rejections=[i for i, _ in items if isinstance(i, Rejection)],
                trace=traces.traceparent(),
            )
            ack = await self._send_batch(shard, batch)
            record_ack(span, batch, ack)
            return ack

    async def _send_batch(self, shard: int, batch: IngestBatch) -> IngestAck:
        started = time.monotonic()
        health = self._health[shard]

        def on_retry(exc: BaseException) -> None:
            if is_backpressure(exc):
                health.last_pushback = time.monotonic()

        try:
            ack = await send_batch_within(
                self.client,
                shard,
                self.settings.shards,
                batch,
                deadline_s=self.settings.ack_timeout_s,
                on_retry=on_retry,
            )
        except Exception as exc:
            log.warning(
                "proxy update failed",
                shard=shard,
                items=len(batch.events) + len(batch.rejections),
                error=type(exc).__name__,
                detail=str(exc)[:300],
            )
            raise
        health.last_ok = time.monotonic()
        log.debug(
            "proxy update",
            shard=shard,
            events=len(batch.events),
            rejections=len(batch.rejections),
            accepted=ack.accepted,
            duplicates=ack.duplicates,
            rejected=ack.rejected,
            duration_ms=round((health.last_ok - started) * 1000, 1),
        )
        return ack

    async def acknowledge(
        self, items: Iterable[tuple[Event | Rejection, bytes]], request: web.Request
    ) -> None:
        """Send items through their shards and wait until all are durable.

        Raises:
            Unavailable: not all were acknowledged within ``ack_timeout_s``
                (or could not be queued); the request gets 503.
        """
        futures: list[asyncio.Future[IngestAck]] = []
        shards: set[int] = set()
        trace = traces.traceparent()
        try:
            for item, raw in items:
                shard = shard_for(item, raw, self.settings.shards)
                size = (
                    min(len(raw), RAW_KEEP_BYTES)
                    if isinstance(item, Rejection)
                    else len(raw)
                )
                futures.append(self.batcher.submit(shard, ((item, trace),), size))
                shards.add(shard)
        except (Closed, QueueFull) as exc:
            _abandon(futures)
            request["shards"] = sorted(shards)
            raise Unavailable(
                "shutting down"
                if isinstance(exc, Closed)
                else f"shard {shard} has {self.batcher.queued(shard)} items queued"
            ) from None
        request["shards"] = sorted(shards)
        try:
            async with asyncio.timeout(self.settings.ack_timeout_s):
                # Awaited directly, so a timeout (or the request being
                # cancelled) cancels the future it was waiting on, which
                # tells the batcher to drop that item if it is not sent yet.
                for future in futures:
                    await future
        except TimeoutError:
            _abandon(futures)
            raise Unavailable(
                f"not acknowledged within {self.settings.ack_timeout_s}s"
            ) from None
        except Exception as exc:  # the update that carried an item failed
            _abandon(futures)
            raise Unavailable(type(exc).__name__) from exc

    async def readiness(self) -> Readiness:
        """Temporal reachable and no proxy pushing back; cached for a second,
        and concurrent probes share one check."""
        now = time.monotonic()
        if self._ready is not None and now - self._ready_at < _READY_CACHE_S:
            return self._ready
        if self._ready_check is None or self._ready_check.done():
            self._ready_check = asyncio.create_task(self._check_ready())
        result = await asyncio.shield(self._ready_check)
        self._ready, self._ready_at = result, time.monotonic()
        return result

    async def _check_ready(self) -> Readiness:
        if self.batcher.closing:
            return Readiness(False, ("shutting down",))
        timeout = timedelta(seconds=self.settings.ready_timeout_s)
        try:
            await self.client.workflow_service.get_system_info(
                GetSystemInfoRequest(), timeout=timeout
            )
        except Exception as exc:
            return Readiness(False, (f"temporal unreachable: {type(exc).__name__}",))
        problems = await asyncio.gather(
            *(self._shard_problem(shard, timeout) for shard in range(len(self._health)))
        )
        found = tuple(p for p in problems if p is not None)
        return Readiness(not found, found)

    async def _shard_problem(self, shard: int, rpc_timeout: timedelta) -> str | None:
        health = self._health[shard]
        now = time.monotonic()
        pushed_back = health.last_pushback > health.last_ok
        if pushed_back and now - health.last_pushback < _RECENT_S:
            return f"shard {shard} is pushing back"
        if now - health.last_ok < _RECENT_S:
            return None  # it took an update just now: no need to ask
        handle = self.client.get_workflow_handle(routing.proxy_id(shard))
        try:
            pending = await handle.query(
                names.PROXY_PENDING, rpc_timeout=rpc_timeout, result_type=int
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None  # started by the first batch that reaches it
            return f"shard {shard} did not answer: {exc.status.name}"
        except Exception as exc:
            return f"shard {shard} did not answer: {type(exc).__name__}"
        if pending >= self.settings.ready_max_pending:
            return f"shard {shard} is pushing back ({pending} events pending)"
        return None

    async def close(self) -> None:
        await self.batcher.close()


def _abandon(futures: Iterable[asyncio.Future[IngestAck]]) -> None:
    # Cancel what is still waiting; read the outcome of what is done, so that
    # a failure shared by a whole batch is not reported as never retrieved.
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


INGRESS: web.AppKey[Ingress] = web.AppKey("ingress", Ingress)
