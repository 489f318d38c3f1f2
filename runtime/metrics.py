"""One Prometheus endpoint per process: ``GET /metrics`` on ``--metrics-port``.

Two sources answer it together: ``prometheus_client``'s registry (the
activities', the sinks' and the ingress's metrics) and the Temporal SDK's own
exporter (its runtime metrics, ``temporal_*``, and what workflow code counts
through ``workflow.metric_meter()``, ``eventflow_events_total`` among them).
The SDK's exporter listens on a loopback port of its own; this endpoint reads
it on every scrape and serves both, so a scrape config needs one target.
"""

from __future__ import annotations

import socket

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = structlog.get_logger(__name__)


def sdk_metrics_address() -> str:
    """A free loopback address for the SDK's exporter."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class MetricsServer:
    """Serves ``/metrics`` on ``host:port``, with the SDK's exporter at
    ``sdk_address`` (None: no SDK metrics) folded in."""

    def __init__(self, *, host: str, port: int, sdk_address: str | None) -> None:
        self.host, self.port, self.sdk_address = host, port, sdk_address
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=5), trust_env=False
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("metrics served", address=f"{self.host}:{self.port}")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        if self.sdk_address is not None and self._session is not None:
            try:
                url = f"http://{self.sdk_address}/metrics"
                async with self._session.get(url) as response:
                    body += b"\n" + await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Ours still go out: a scrape without the SDK's beats none.
                log.warning("SDK metrics unavailable", error=type(exc).__name__)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
