"""The ingress's HTTP face (aiohttp): the routes, the access log, the app.

Routes:
    ``POST /pubsub/push``: one Pub/Sub push envelope (one message) per request.
    ``POST /events``: one JSON event, a JSON array of events, or JSON Lines.
    ``GET /healthz``: the process is alive. ``GET /readyz``: Temporal answers
    and no proxy is pushing back.

A request is answered 2xx only once its events (or their dead letters) are in
a proxy's state; ``docs/ingress.md`` has the status codes and why.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from opentelemetry.trace import SpanKind, Status, StatusCode
from temporalio.client import Client

from ingress.envelope import Auth, authorize, decode_push, encode_json, split_events
from ingress.metrics import REQUEST_SECONDS, REQUESTS
from ingress.service import Ingress, IngressSettings, Outcome, Unavailable
from wire import Event, Rejection, parse_event, traces

log = structlog.get_logger("ingress")
access_log = structlog.get_logger("ingress.access")

INGRESS: web.AppKey[Ingress] = web.AppKey("ingress", Ingress)
ROUTES = ("/pubsub/push", "/events", "/healthz", "/readyz")
# The routes that take events, and so start (or continue) a trace.
TRACED_ROUTES = ("/pubsub/push", "/events")


def _json(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=encode_json(body),
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
        elapsed = time.perf_counter() - started
        # The route, not the path: a label per stray path would grow forever.
        route = request.path if request.path in ROUTES else "other"
        REQUESTS.labels(route, str(status)).inc()
        REQUEST_SECONDS.labels(route).observe(elapsed)
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": request.method,
            "path": request.path,  # never the query string: it may hold the token
            "status": status,
            "outcome": str(outcome) if outcome else Outcome.ERROR.value,
            "duration_ms": round(elapsed * 1000, 2),
        }
        for key in ("shards", "events", "message_id", "detail"):
            if key in request:
                fields[key] = request[key]
        access_log.info("request", **fields)


@web.middleware
async def _traced(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """A server span per request that takes events, continuing the caller's
    trace when it sends a ``traceparent`` header; the batches its events go
    in continue or link it (``wire.traces``)."""
    if request.path not in TRACED_ROUTES:
        return await handler(request)
    with traces.TRACER.start_as_current_span(
        f"{request.method} {request.path}",
        context=traces.extract(request.headers),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": request.method,
            "http.route": request.path,
            "url.path": request.path,
        },
    ) as span:
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        for key in ("events", "message_id", "outcome"):
            if key in request:
                span.set_attribute(f"eventflow.{key}", str(request[key]))
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        return response


def create_app(client: Client, settings: IngressSettings) -> web.Application:
    """The ingress as an aiohttp application.

    Its cleanup sends whatever is still queued and waits for it, so a runner's
    graceful shutdown (stop listening, finish in-flight requests, clean up)
    loses nothing that was acknowledged.
    """
    app = web.Application(
        middlewares=[_traced, _access_log], client_max_size=settings.max_body_bytes
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
