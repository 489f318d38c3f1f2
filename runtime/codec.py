"""The codec server (aiohttp): Temporal's UI and CLI read payloads through it.

Routes (the remote codec protocol of Temporal's UI and CLI):
    ``POST /decode``, ``POST /encode``: a body ``{"payloads": [...]}`` of
    payloads in protobuf JSON form, answered in the same form, translated by
    ``wire.readable.ReadableCodec``. Each also under ``/{namespace}/``, for a
    CLI endpoint templated with ``{namespace}``.
    ``OPTIONS`` on both: the browser's CORS preflight.
    ``GET /healthz``: the process is alive.

The UI calls the codec server from the browser, so its answers carry CORS
headers for the configured origins (the preflight needs no token: browsers
send none with it). With a shared token configured, every other request
needs ``Authorization: Bearer TOKEN`` (401 without, 403 with a wrong one).
``X-Namespace`` (which the UI sends) is accepted; the translation is the same
for every namespace.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import structlog
from aiohttp import hdrs, web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from runtime.cli import log_level_option
from runtime.settings import option, positive_int
from wire.readable import ReadableCodec, ReadableError

__all__ = [
    "CODEC_PORT_ENV",
    "CODEC_TOKEN_ENV",
    "DEFAULT_CORS_ORIGINS",
    "DEFAULT_PORT",
    "CodecServerSettings",
    "create_app",
]

log = structlog.get_logger("codec")

DEFAULT_PORT = 8081
# The local dev server's UI, under both names a browser may have typed.
DEFAULT_CORS_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")
CODEC_TOKEN_ENV = "EVENTFLOW_CODEC_TOKEN"
CODEC_PORT_ENV = "EVENTFLOW_CODEC_PORT"  # script.devserver starts it there too
ALLOWED_HEADERS = "X-Namespace, Authorization, Content-Type"


def origins(text: str) -> tuple[str, ...]:
    """Comma-separated origins (``scheme://host[:port]``, no path)."""
    found = tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())
    for origin in found:
        scheme, sep, rest = origin.partition("://")
        if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
            raise ValueError(f"expected origins like http://host:port, got {origin!r}")
    return found


@dataclass(frozen=True, kw_only=True)
class CodecServerSettings:
    """What ``python -m script.codec`` is told."""

    host: str = option(
        "127.0.0.1",
        flag="--host",
        env="EVENTFLOW_CODEC_HOST",
        help="address to listen on (the UI calls it from the browser's machine)",
    )
    port: int = option(
        DEFAULT_PORT,
        flag="--port",
        env=CODEC_PORT_ENV,
        help="port; 0 picks a free one",
    )
    cors_origins: tuple[str, ...] = option(
        DEFAULT_CORS_ORIGINS,
        flag="--cors-origin",
        env="EVENTFLOW_CODEC_CORS_ORIGIN",
        parse=origins,
        metavar="ORIGINS",
        shown_default=",".join(DEFAULT_CORS_ORIGINS),
        help="the UI origins allowed to call it, comma-separated "
        "(https://cloud.temporal.io for Temporal Cloud)",
    )
    token: str | None = option(
        None,
        env=CODEC_TOKEN_ENV,
        parse=str,
        repr=False,
        help="the shared access token (environment only)",
    )
    token_file: Path | None = option(
        None,
        flag="--token-file",
        parse=Path,
        metavar="PATH",
        help=f"file holding the shared access token, instead of env "
        f"{CODEC_TOKEN_ENV}; without either, every request is let in",
    )
    max_body_bytes: int = option(
        8 << 20,
        flag="--max-body-bytes",
        env="EVENTFLOW_CODEC_MAX_BODY_BYTES",
        parse=positive_int,
        metavar="BYTES",
        help="larger request bodies get 413 (a history page's payloads fit)",
    )
    log_level: str = log_level_option()

    def shared_token(self) -> str | None:
        """The token requests must present, or None for none."""
        if self.token_file is not None:
            return self.token_file.read_text().strip() or None
        return self.token


CODEC: web.AppKey[PayloadCodec] = web.AppKey("codec", PayloadCodec)
SETTINGS: web.AppKey[CodecServerSettings] = web.AppKey("settings", CodecServerSettings)
TOKEN: web.AppKey[str | None] = web.AppKey("token", str)
# What the access log says of a request.
OUTCOME: web.RequestKey[str] = web.RequestKey("outcome", str)
PAYLOADS: web.RequestKey[int] = web.RequestKey("payloads", int)

_encode_json = msgspec.json.Encoder().encode


def _json(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=_encode_json(body),
        content_type="application/json",
        headers=headers or None,
    )


def _cors(request: web.Request, response: web.StreamResponse) -> None:
    """CORS headers for an allowed origin; none for any other (the browser
    then refuses the answer to the page, which is the point)."""
    origin = request.headers.get(hdrs.ORIGIN)
    response.headers[hdrs.VARY] = "Origin"
    if origin is None or origin not in request.app[SETTINGS].cors_origins:
        return
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
    # The UI's "include cross-origin credentials" setting needs this.
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"


async def preflight(request: web.Request) -> web.Response:
    response = web.Response(status=204)
    if request.headers.get(hdrs.ORIGIN) in request.app[SETTINGS].cors_origins:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "POST, OPTIONS"
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOWED_HEADERS
        response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"
    return response


def _authorized(request: web.Request) -> web.Response | None:
    """None when the request may go on, else the 401 or 403 answer."""
    expected = request.app[TOKEN]
    if expected is None:
        return None
    scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        request[OUTCOME] = "unauthorized"
        return _json(
            401, {"error": "a token is required"}, **{"WWW-Authenticate": "Bearer"}
        )
    if not hmac.compare_digest(value.strip().encode(), expected.encode()):
        request[OUTCOME] = "forbidden"
        return _json(403, {"error": "the token is wrong"})
    return None


def _translate(
    direction: Callable[[PayloadCodec], Callable[[Any], Awaitable[Any]]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        refused = _authorized(request)
        if refused is not None:
            return refused
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            request[OUTCOME] = "too_large"
            limit = request.app[SETTINGS].max_body_bytes
            return _json(413, {"error": f"the body is over {limit} bytes"})
        try:
            payloads = json_format.Parse(body, Payloads(), ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            request[OUTCOME] = "bad_request"
            return _json(400, {"error": f"expected {{'payloads': [...]}}: {exc}"})
        try:
            translated = await direction(request.app[CODEC])(payloads.payloads)
        except ReadableError as exc:
            request[OUTCOME] = "bad_request"
            return _json(400, {"error": str(exc)})
        request[OUTCOME] = "ok"
        request[PAYLOADS] = len(translated)
        return web.Response(
            text=json_format.MessageToJson(Payloads(payloads=translated), indent=None),
            content_type="application/json",
        )

    return handle


async def healthz(_request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


@web.middleware
async def _cors_and_log(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        _cors(request, response)
        return response
    except web.HTTPException as exc:  # 404, 405 from the router
        status = exc.status
        _cors(request, exc)
        raise
    finally:
        # Never the payloads, nor the Authorization header.
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=status,
            outcome=request.get(OUTCOME),
            payloads=request.get(PAYLOADS),
            namespace=request.headers.get("X-Namespace")
            or request.match_info.get("namespace"),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )


def create_app(
    settings: CodecServerSettings, codec: PayloadCodec | None = None
) -> web.Application:
    """The codec server as an aiohttp application.

    Args:
        settings: origins, token and body limit.
        codec: what ``/decode`` and ``/encode`` apply; the project's
            ``ReadableCodec`` by default.
    """
    app = web.Application(
        middlewares=[_cors_and_log], client_max_size=settings.max_body_bytes
    )
    app[SETTINGS] = settings
    app[TOKEN] = settings.shared_token()
    app[CODEC] = codec or ReadableCodec()
    decode = _translate(lambda codec: codec.decode)
    encode = _translate(lambda codec: codec.encode)
    for prefix in ("", "/{namespace}"):
        app.router.add_post(f"{prefix}/decode", decode)
        app.router.add_post(f"{prefix}/encode", encode)
        app.router.add_route("OPTIONS", f"{prefix}/decode", preflight)
        app.router.add_route("OPTIONS", f"{prefix}/encode", preflight)
    app.router.add_get("/healthz", healthz)
    return app
