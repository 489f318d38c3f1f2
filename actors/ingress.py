"""The HTTP ingress: Pub/Sub push deliveries and a REST endpoint, in front of
the shard proxies.

Routes:
    ``POST /pubsub/push``: one Pub/Sub push envelope (one message) per request.
    ``POST /events``: one JSON event, a JSON array of events, or JSON Lines.
    ``GET /healthz``: the process is alive. ``GET /readyz``: Temporal answers
    and no proxy is pushing back.

Decisions, and why:

* **A 2xx means durable.** A request is answered 2xx only after the
  ``ingest`` update carrying its events (or their rejections) returned: from
  then on the proxy's workflow state holds them. Anything else is a 5xx, which
  makes Pub/Sub (and any sane sender) deliver again; the event id (and the
  rejection id, a hash of the bytes) de-duplicate the redelivery.
* **Micro-batching.** Requests carry one event each (Pub/Sub push), but an
  update costs the server a workflow task whatever it carries. ``ShardBatcher``
  gathers what arrives within a short window (or up to a size cap) into one
  update per shard, with a bounded number of updates in flight per shard (one
  by default). While those are busy, new items keep gathering, so batches grow
  with the load by themselves.
* **Bounded waits.** A request waits at most ``ack_timeout_s`` for its update,
  then gets 503 with ``Retry-After``. The update is sent with the same
  deadline and abandoned after it; if it lands anyway, the sender's retry is a
  duplicate and is dropped. The default (8 s) stays under Pub/Sub's default
  ack deadline (10 s): an answer after the ack deadline counts as a nack. A
  shard's queue is capped (``max_queued``): past it, requests get 503 at once
  instead of piling up while Temporal is away.
* **Status codes for Pub/Sub.** Pub/Sub redelivers anything but 102/200/201/
  202/204 until the message expires or the subscription's dead-letter policy
  takes it. So on ``/pubsub/push`` a message that can never be valid (bad
  envelope, bad base64, bad JSON, missing fields, an event over the payload
  limit) is dead-lettered
  here, with its reason, and acknowledged with 200. ``/events`` callers are
  programs that read responses: they get 400 with the reasons (the rejected
  events are dead-lettered all the same, and the valid ones of the same
  request are accepted).
* **Attributes fill in, the body wins.** ``event_id`` defaults to the
  message id; ``tenant_id``, ``job_id`` and ``analysis_type`` may come from
  message attributes when the event lacks them. When both are given and
  differ, the body's value is used and the conflict is logged (field names
  only, never values). The merged event keeps the body's bytes for every
  field it had, so a payload lands byte for byte.
* **Access.** An optional shared token, as ``Authorization: Bearer`` or as
  Pub/Sub's ``?token=`` query parameter (push subscriptions cannot set
  headers other than an OIDC token), compared in constant time: none given is
  401, a wrong one 403. Probes (``/healthz``, ``/readyz``) need no token.
* **Logs.** One structlog line per request: request id, method, path (never
  the query string, which may hold the token), status, outcome, shards, event
  count, duration. Event contents and rejection reasons (which can quote
  input) only at debug level.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hmac
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import msgspec
import structlog
from aiohttp import web
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from actors import routing
from actors.client import is_backpressure, send_batch_within
from actors.proxy import ProxyWorkflow
from actors.rules.proxy import IngestAck, IngestBatch
from wire import Event, Limits, Rejection, parse_event, reject
from wire.events import ID_MAX_LENGTH
from wire.validate import RAW_KEEP_BYTES

log = structlog.get_logger("actors.ingress")
access_log = structlog.get_logger("ingress.access")

# Pub/Sub's largest message is 10 MB; base64 makes it 13.4 MB in a push
# envelope. Refusing a real Pub/Sub message with 413 would have it redelivered
# until it expires, so the default body limit lets every one in (and an
# oversize event is then dead-lettered like any other invalid one).
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

# Fields that message attributes may supply when the event lacks them.
ATTRIBUTE_FIELDS = ("tenant_id", "job_id", "analysis_type")


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
        batch_max_bytes: ...or this many bytes (Temporal caps a payload at
            2 MiB; the codec compresses, the cap leaves room).
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
            as pushing back for readiness (the workers' ``max_pending``).
        ready_timeout_s: how long a readiness check waits for Temporal.
    """

    shards: int = routing.DEFAULT_SHARDS
    limits: Limits = field(default_factory=Limits)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    token: str | None = None
    batch_window_s: float = 0.005
    batch_max_events: int = 500
    batch_max_bytes: int = 1 << 20
    in_flight: int = 1
    max_queued: int = 20_000
    ack_timeout_s: float = 8.0
    retry_after_s: int = 2
    ready_max_pending: int = 50_000
    ready_timeout_s: float = 3.0


# --- Pure helpers: envelope, merging, splitting, tokens ----------------------


class _PushMessage(msgspec.Struct, kw_only=True):
    # Pub/Sub sends both spellings of the id; older clients only camelCase.
    data: str | None = None
    attributes: dict[str, str] | None = None
    messageId: str | None = None
    message_id: str | None = None


class _PushEnvelope(msgspec.Struct, kw_only=True):
    message: _PushMessage
    subscription: str | None = None


_envelopes = msgspec.json.Decoder(_PushEnvelope)
_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_raw_values = msgspec.json.Decoder(msgspec.Raw)
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_encode = msgspec.json.Encoder().encode
_ANALYSIS_RESULT = b'"analysis.result"'


@dataclass(frozen=True)
class PushMessage:
    """A decoded push delivery: the event to validate and where it came from.

    Attributes:
        raw: the event JSON, with the envelope's defaults merged in.
        message_id: Pub/Sub's id of the message.
        subscription: the subscription that pushed it.
        filled: fields taken from the envelope (the body lacked them).
        conflicts: attributes whose value differed from the body's.
    """

    raw: bytes
    message_id: str | None = None
    subscription: str | None = None
    filled: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()


def _usable_id(value: object) -> str | None:
    # An id good enough to route a rejection and to name it in a dead letter.
    if (
        isinstance(value, str)
        and 0 < len(value) <= ID_MAX_LENGTH
        and "/" not in value
        and value.isprintable()
    ):
        return value
    return None


def merge_envelope(
    data: bytes, *, message_id: str | None, attributes: dict[str, str] | None
) -> tuple[bytes, tuple[str, ...], tuple[str, ...]]:
    """Fill the event's missing fields from the envelope.

    ``event_id`` defaults to ``message_id``; ``tenant_id``, ``job_id`` and
    (for an ``analysis.result``) ``analysis_type`` come from ``attributes``
    when the event lacks them (absent or null). A field the event has is kept
    byte for byte, even when an attribute disagrees.

    Returns:
        The event bytes (``data`` itself when nothing was filled, or when it
        is not a JSON object: validation will say what is wrong), the fields
        filled in, and the attribute names that conflicted with the body.
    """
    attributes = attributes or {}
    wanted = [name for name in ATTRIBUTE_FIELDS if name in attributes]
    if message_id is None and not wanted:
        return data, (), ()
    try:
        fields = _fields.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return data, (), ()
    filled: list[str] = []
    conflicts: list[str] = []

    def missing(name: str) -> bool:
        value = fields.get(name)
        return value is None or bytes(value).strip() == b"null"

    if message_id is not None and missing("event_id"):
        fields["event_id"] = msgspec.Raw(_encode(message_id))
        filled.append("event_id")
    is_result = bytes(fields.get("type", b"")).strip() == _ANALYSIS_RESULT
    for name in wanted:
        if name == "analysis_type" and not is_result:
            continue
        if missing(name):
            fields[name] = msgspec.Raw(_encode(attributes[name]))
            filled.append(name)
            continue
        try:
            body_value = msgspec.json.decode(bytes(fields[name]))
        except msgspec.DecodeError:  # pragma: no cover - decoded above
            body_value = None
        if body_value != attributes[name]:
            conflicts.append(name)
    if not filled:
        return data, (), tuple(conflicts)
    return _encode(fields), tuple(filled), tuple(conflicts)


def decode_push(body: bytes) -> PushMessage | Rejection:
    """Decode a Pub/Sub push envelope into the event bytes to validate.

    Returns a Rejection when the envelope itself is unusable (not JSON, no
    ``message``, ``data`` that is not base64); the event inside is not
    validated here.
    """
    try:
        envelope = _envelopes.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return reject(body, f"not a Pub/Sub push envelope: {exc}")
    message = envelope.message
    message_id = message.messageId or message.message_id
    attributes = message.attributes or {}
    try:
        data = base64.b64decode(message.data or "", validate=True)
    except (binascii.Error, ValueError) as exc:
        rejection = reject(
            (message.data or "").encode(),
            f"message.data is not valid base64: {exc}",
        )
        # The bytes are unreadable, but the envelope still names the event.
        return msgspec.structs.replace(
            rejection,
            event_id=_usable_id(message_id),
            tenant_id=_usable_id(attributes.get("tenant_id")),
            job_id=_usable_id(attributes.get("job_id")),
        )
    raw, filled, conflicts = merge_envelope(
        data, message_id=message_id, attributes=attributes
    )
    return PushMessage(
        raw=raw,
        message_id=message_id,
        subscription=envelope.subscription,
        filled=filled,
        conflicts=conflicts,
    )


_LINES_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
        "application/json-seq",
    }
)


def split_events(body: bytes, content_type: str = "") -> list[bytes] | Rejection:
    """The events of an ``/events`` body, each as its own bytes.

    One JSON value, a JSON array (each element is one event) or JSON Lines (a
    JSON Lines content type, or several lines that are not one JSON value
    together). Blank lines are skipped. A body that starts like an array but
    is not valid JSON is one Rejection: its elements cannot be told apart.
    """
    text = body.strip()
    if not text:
        return []
    if content_type.lower() not in _LINES_TYPES:
        if text.startswith(b"["):
            try:
                return [bytes(item) for item in _raw_list.decode(text)]
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                return reject(body, f"not a valid JSON array of events: {exc}")
        if b"\n" not in text:
            return [text]
        try:
            _raw_values.decode(text)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            pass  # not one value: JSON Lines
        else:
            return [text]
    return [line.strip() for line in text.split(b"\n") if line.strip()]


class Auth(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # 401
    WRONG = "wrong"  # 403


def authorize(
    expected: str | None, *, authorization: str | None, query_token: str | None
) -> Auth:
    """Check the shared token: a ``Bearer`` header or a ``?token=`` value.

    Any presented credential that matches lets the request in, so a Pub/Sub
    push with an OIDC ``Authorization`` header and the shared ``?token=``
    passes. Every candidate is compared, in constant time.
    """
    if expected is None:
        return Auth.OK
    candidates: list[str] = []
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            candidates.append(value.strip())
    if query_token:
        candidates.append(query_token)
    if not candidates:
        return Auth.MISSING
    want = expected.encode()
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate.encode(), want)
    return Auth.OK if matched else Auth.WRONG


def shard_for(item: Event | Rejection, raw: bytes, shards: int) -> int:
    """The shard an event or rejection goes to: its job's, when known."""
    if item.tenant_id and item.job_id:
        return routing.shard_of(item.tenant_id, item.job_id, shards)
    return routing.raw_shard(raw, shards)


# --- The micro-batcher ---------------------------------------------------------


class Unavailable(Exception):
    """The ingress cannot take this item now (closing, or a shard's queue is
    full); the request gets 503."""


@dataclass
class _Queued:
    item: Event | Rejection
    size: int
    future: asyncio.Future[IngestAck]


@dataclass
class _ShardQueue:
    items: list[_Queued] = field(default_factory=list)
    size: int = 0
    due: bool = False
    timer: asyncio.TimerHandle | None = None
    in_flight: int = 0


class ShardBatcher:
    """Gathers items per shard into ``send(shard, batch)`` calls.

    A shard's batch goes out ``window_s`` after its first item, or at once when
    it holds ``max_items`` items or ``max_bytes`` bytes, with at most
    ``in_flight`` calls per shard at a time; items that arrive while every
    slot is busy wait and go out together. Each ``submit`` returns a future
    for the call that carried the item: its ack, or its exception.

    An item whose future was cancelled before its batch went out (its request
    already got 503) is dropped rather than sent.
    """

    def __init__(
        self,
        send: Callable[[int, IngestBatch], Awaitable[IngestAck]],
        *,
        shards: int,
        window_s: float,
        max_items: int,
        max_bytes: int,
        in_flight: int,
        max_queued: int,
    ) -> None:
        self._send = send
        self._window_s = window_s
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._in_flight = in_flight
        self._max_queued = max_queued
        self._queues = [_ShardQueue() for _ in range(shards)]
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def queued(self, shard: int) -> int:
        return len(self._queues[shard].items)

    @property
    def closing(self) -> bool:
        return self._closing

    def submit(
        self, shard: int, item: Event | Rejection, size: int
    ) -> asyncio.Future[IngestAck]:
        """Queue ``item`` (``size`` bytes) for ``shard``.

        Raises:
            Unavailable: the batcher is closing or the shard's queue is full.
        """
        if self._closing:
            raise Unavailable("shutting down")
        queue = self._queues[shard]
        if len(queue.items) >= self._max_queued:
            raise Unavailable(f"shard {shard} has {len(queue.items)} items queued")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestAck] = loop.create_future()
        queue.items.append(_Queued(item, size, future))
        queue.size += size
        if len(queue.items) >= self._max_items or queue.size >= self._max_bytes:
            queue.due = True
            self._pump(shard)
        elif not queue.due and queue.timer is None:
            queue.timer = loop.call_later(self._window_s, self._on_window, shard)
        return future

    async def close(self) -> None:
        """Take no more items; send everything queued and wait for it."""
        self._closing = True
        for shard in range(len(self._queues)):
            self._pump(shard)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _on_window(self, shard: int) -> None:
        queue = self._queues[shard]
        queue.timer = None
        queue.due = True
        self._pump(shard)

    def _pump(self, shard: int) -> None:
        queue = self._queues[shard]
        while (
            queue.items
            and queue.in_flight < self._in_flight
            and (queue.due or self._closing)
        ):
            batch = self._cut(queue)
            if not batch:
                continue
            queue.in_flight += 1
            task = asyncio.create_task(self._run(shard, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not queue.items:
            # Whatever comes next starts a fresh window.
            queue.due = False
            if queue.timer is not None:
                queue.timer.cancel()
                queue.timer = None
        # Items left behind have waited a window already: they stay due.

    def _cut(self, queue: _ShardQueue) -> list[_Queued]:
        batch: list[_Queued] = []
        size = taken = 0
        for entry in queue.items:
            if batch and (
                len(batch) >= self._max_items or size + entry.size > self._max_bytes
            ):
                break
            taken += 1
            queue.size -= entry.size
            if entry.future.done():  # abandoned: its sender was told 503
                continue
            batch.append(entry)
            size += entry.size
        del queue.items[:taken]
        return batch

    async def _run(self, shard: int, batch: list[_Queued]) -> None:
        ingest = IngestBatch(
            events=[e.item for e in batch if not isinstance(e.item, Rejection)],
            rejections=[e.item for e in batch if isinstance(e.item, Rejection)],
        )
        try:
            ack = await self._send(shard, ingest)
        except Exception as exc:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
        else:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_result(ack)
        finally:
            self._queues[shard].in_flight -= 1
            self._pump(shard)


# --- Readiness ----------------------------------------------------------------


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


# --- The service ----------------------------------------------------------------


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


class Ingress:
    """The service's state: the client, the batcher, shard health.

    Built by ``create_app``; handlers reach it through the application.
    """

    def __init__(self, client: Client, settings: IngressSettings) -> None:
        self.client = client
        self.settings = settings
        self._health = [_ShardHealth() for _ in range(settings.shards)]
        self.batcher = ShardBatcher(
            self._send,
            shards=settings.shards,
            window_s=settings.batch_window_s,
            max_items=settings.batch_max_events,
            max_bytes=settings.batch_max_bytes,
            in_flight=settings.in_flight,
            max_queued=settings.max_queued,
        )
        self._ready: Readiness | None = None
        self._ready_at = float("-inf")
        self._ready_check: asyncio.Task[Readiness] | None = None

    async def _send(self, shard: int, batch: IngestBatch) -> IngestAck:
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
        try:
            for item, raw in items:
                shard = shard_for(item, raw, self.settings.shards)
                size = (
                    min(len(raw), RAW_KEEP_BYTES)
                    if isinstance(item, Rejection)
                    else len(raw)
                )
                futures.append(self.batcher.submit(shard, item, size))
                shards.add(shard)
        except Unavailable:
            _abandon(futures)
            request["shards"] = sorted(shards)
            raise
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
            pending = await handle.query(ProxyWorkflow.pending, rpc_timeout=rpc_timeout)
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


def _json(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=_encode(body),
        content_type="application/json",
        headers=headers or None,
    )


def _unavailable(ingress: Ingress, request: web.Request, why: str) -> web.Response:
    request["outcome"] = Outcome.UNAVAILABLE
    request["detail"] = why
    return _json(
        503,
        {"error": "unavailable, retry later"},
        **{"Retry-After": str(ingress.settings.retry_after_s)},
    )


async def _read_body(ingress: Ingress, request: web.Request) -> bytes | web.Response:
    """The body, or the response that refuses the request (auth, size)."""
    auth = authorize(
        ingress.settings.token,
        authorization=request.headers.get("Authorization"),
        query_token=request.query.get("token"),
    )
    if auth is Auth.MISSING:
        request["outcome"] = Outcome.UNAUTHORIZED
        return _json(
            401, {"error": "a token is required"}, **{"WWW-Authenticate": "Bearer"}
        )
    if auth is Auth.WRONG:
        request["outcome"] = Outcome.FORBIDDEN
        return _json(403, {"error": "the token is wrong"})
    limit = ingress.settings.max_body_bytes
    too_large = _json(413, {"error": f"the body is over the limit of {limit} bytes"})
    if request.content_length is not None and request.content_length > limit:
        request["outcome"] = Outcome.TOO_LARGE
        return too_large
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        request["outcome"] = Outcome.TOO_LARGE
        return too_large


async def pubsub_push(request: web.Request) -> web.Response:
    """One Pub/Sub push delivery: 200 once its event (or its dead letter) is
    durable, 503 when that could not be made so in time."""
    ingress = request.app[INGRESS]
    body = await _read_body(ingress, request)
    if isinstance(body, web.Response):
        return body
    decoded = decode_push(body)
    if isinstance(decoded, Rejection):
        item: Event | Rejection = decoded
        raw = body
    else:
        request["message_id"] = decoded.message_id
        if decoded.conflicts:
            log.warning(
                "message attributes conflict with the event; the event's values win",
                request_id=request["request_id"],
                message_id=decoded.message_id,
                fields=list(decoded.conflicts),
            )
        raw = decoded.raw
        item = parse_event(raw, ingress.settings.limits)
    try:
        await ingress.acknowledge([(item, raw)], request)
    except Unavailable as exc:
        return _unavailable(ingress, request, str(exc))
    request["events"] = 1
    if isinstance(item, Rejection):
        request["outcome"] = Outcome.DEAD_LETTERED
        log.debug("dead-lettered", request_id=request["request_id"], reason=item.reason)
        return _json(200, {"outcome": "dead_lettered", "reason": item.reason})
    request["outcome"] = Outcome.ACCEPTED
    return _json(200, {"outcome": "accepted"})


async def post_events(request: web.Request) -> web.Response:
    """One event, an array or JSON Lines: 200 when all were accepted, 400 with
    the reasons when some were refused (those are dead-lettered, the others
    accepted), 503 when not everything could be made durable in time."""
    ingress = request.app[INGRESS]
    body = await _read_body(ingress, request)
    if isinstance(body, web.Response):
        return body
    split = split_events(body, request.content_type)
    if isinstance(split, Rejection):
        pairs: list[tuple[Event | Rejection, bytes]] = [(split, body)]
    else:
        pairs = [(parse_event(raw, ingress.settings.limits), raw) for raw in split]
    if not pairs:
        request["outcome"] = Outcome.EMPTY
        return _json(400, {"error": "no events in the body"})
    try:
        await ingress.acknowledge(pairs, request)
    except Unavailable as exc:
        return _unavailable(ingress, request, str(exc))
    request["events"] = len(pairs)
    errors = [
        {"index": n, "reason": item.reason}
        for n, (item, _) in enumerate(pairs)
        if isinstance(item, Rejection)
    ]
    if errors:
        request["outcome"] = Outcome.REJECTED
        return _json(
            400,
            {
                "accepted": len(pairs) - len(errors),
                "rejected": len(errors),
                "errors": errors,
                "dead_lettered": True,
            },
        )
    request["outcome"] = Outcome.ACCEPTED
    return _json(200, {"accepted": len(pairs), "rejected": 0})


async def healthz(request: web.Request) -> web.Response:
    request["outcome"] = Outcome.OK
    return _json(200, {"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    ready = await request.app[INGRESS].readiness()
    if ready.ready:
        request["outcome"] = Outcome.OK
        return _json(200, {"status": "ready"})
    request["outcome"] = Outcome.NOT_READY
    request["detail"] = "; ".join(ready.problems)
    return _json(503, {"status": "not ready", "problems": list(ready.problems)})


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= 128 and given.isprintable():
        return given
    return os.urandom(8).hex()


@web.middleware
async def _access_log(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = request["request_id"] = _request_id(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-Id"] = request_id
        return response
    except web.HTTPException as exc:  # 404, 405 from the router
        status = exc.status
        request.setdefault(
            "outcome", Outcome.REFUSED if status < 500 else Outcome.ERROR
        )
        exc.headers["X-Request-Id"] = request_id
        raise
    except asyncio.CancelledError:
        status = 499  # the server cancelled it (shutdown timeout)
        raise
    except Exception:
        log.exception("request failed", request_id=request_id)
        raise
    finally:
        outcome = request.get("outcome")
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": request.method,
            "path": request.path,  # never the query string: it may hold the token
            "status": status,
            "outcome": str(outcome) if outcome else Outcome.ERROR.value,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        for key in ("shards", "events", "message_id", "detail"):
            if key in request:
                fields[key] = request[key]
        access_log.info("request", **fields)


def create_app(client: Client, settings: IngressSettings) -> web.Application:
    """The ingress as an aiohttp application.

    Its cleanup sends whatever is still queued and waits for it, so a runner's
    graceful shutdown (stop listening, finish in-flight requests, clean up)
    loses nothing that was acknowledged.
    """
    app = web.Application(
        middlewares=[_access_log], client_max_size=settings.max_body_bytes
    )
    ingress = Ingress(client, settings)
    app[INGRESS] = ingress

    async def close(_app: web.Application) -> None:
        await ingress.close()

    app.on_cleanup.append(close)
    app.router.add_post("/pubsub/push", pubsub_push)
    app.router.add_post("/events", post_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
