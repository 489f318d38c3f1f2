"""Run the HTTP ingress: ``python -m script.ingress --host H --port P``.

Takes Pub/Sub push deliveries on ``POST /pubsub/push`` and events on
``POST /events`` and answers 2xx only once a shard proxy holds them; see
``ingress`` and docs/ingress.md for the rules. Every option has an environment variable;
the access token comes only from the environment or a file, never from the
command line (which any local user can read in the process list).

Connection settings come from the SDK's standard environment variables
(TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*...).
The ingress starts even when Temporal is unreachable: ``/readyz`` says so,
and deliveries get 503 until it is back.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web

from ingress import IngressSettings, create_app
from ingress.service import TOKEN_ENV
from runtime.cli import (
    configure_logging,
    exit_now,
    log_level_option,
    metrics_host_option,
    metrics_port_option,
    shards_option,
    start_tracing,
)
from runtime.client import connect
from runtime.metrics import MetricsServer, sdk_metrics_address
from runtime.settings import add_options, from_args, option, positive_int
from wire.validate import Limits

log = structlog.get_logger("script.ingress")

# The service's own defaults: each option below reads its default from here.
_SERVICE = IngressSettings()


@dataclass(frozen=True, kw_only=True)
class IngressOptions:
    """What ``python -m script.ingress`` is told; ``service_settings()``
    makes the service's ``IngressSettings`` of it."""

    host: str = option(
        "127.0.0.1",
        flag="--host",
        env="EVENTFLOW_INGRESS_HOST",
        help="address to listen on; 0.0.0.0 for every interface",
    )
    port: int = option(
        8080,
        flag="--port",
        # PORT is what Cloud Run sets.
        env=("EVENTFLOW_INGRESS_PORT", "PORT"),
        help="port; 0 picks a free one",
    )
    shards: int = shards_option()
    batch_window_ms: float = option(
        _SERVICE.batch_window_s * 1000,
        flag="--batch-window-ms",
        env="EVENTFLOW_INGRESS_BATCH_WINDOW_MS",
        metavar="MS",
        help="how long a shard's batch waits for more events after its first",
    )
    batch_max_events: int = option(
        _SERVICE.batch_max_events,
        flag="--batch-max-events",
        env="EVENTFLOW_INGRESS_BATCH_MAX_EVENTS",
        parse=positive_int,
        metavar="N",
        help="events per update at most; a full batch goes at once",
    )
    batch_max_bytes: int = option(
        _SERVICE.batch_max_bytes,
        flag="--batch-max-bytes",
        env="EVENTFLOW_INGRESS_BATCH_MAX_BYTES",
        parse=positive_int,
        metavar="BYTES",
        help="bytes per update at most",
    )
    in_flight: int = option(
        _SERVICE.in_flight,
        flag="--in-flight",
        env="EVENTFLOW_INGRESS_IN_FLIGHT",
        parse=positive_int,
        metavar="N",
        help="updates in flight per shard; Temporal allows 10 per workflow in all",
    )
    max_queued: int = option(
        _SERVICE.max_queued,
        flag="--max-queued",
        env="EVENTFLOW_INGRESS_MAX_QUEUED",
        parse=positive_int,
        metavar="N",
        help="events waiting per shard past which requests get 503 at once",
    )
    ack_timeout: float = option(
        _SERVICE.ack_timeout_s,
        flag="--ack-timeout",
        env="EVENTFLOW_INGRESS_ACK_TIMEOUT_S",
        metavar="S",
        help="seconds a request waits for its update before 503; keep it under "
        "the subscription's ack deadline",
    )
    retry_after: int = option(
        _SERVICE.retry_after_s,
        flag="--retry-after",
        env="EVENTFLOW_INGRESS_RETRY_AFTER_S",
        parse=positive_int,
        metavar="S",
        help="Retry-After seconds of a 503",
    )
    max_body_bytes: int = option(
        _SERVICE.max_body_bytes,
        flag="--max-body-bytes",
        env="EVENTFLOW_INGRESS_MAX_BODY_BYTES",
        parse=positive_int,
        metavar="BYTES",
        help="larger request bodies get 413; the default has room for Pub/Sub's "
        "largest message",
    )
    max_payload_bytes: int = option(
        _SERVICE.limits.max_payload_bytes,
        flag="--max-payload-bytes",
        env="EVENTFLOW_MAX_PAYLOAD_BYTES",
        parse=positive_int,
        metavar="BYTES",
        help="largest analysis payload; larger events are dead-lettered",
    )
    token: str | None = option(
        None,
        env=TOKEN_ENV,
        parse=str,
        repr=False,
        help="the shared access token (environment only)",
    )
    token_file: Path | None = option(
        None,
        flag="--token-file",
        parse=Path,
        metavar="PATH",
        help=f"file holding the shared access token, instead of env {TOKEN_ENV}; "
        "without either, every request is let in",
    )
    ready_max_pending: int = option(
        _SERVICE.ready_max_pending,
        flag="--ready-max-pending",
        env="EVENTFLOW_INGRESS_READY_MAX_PENDING",
        parse=positive_int,
        metavar="N",
        help="a proxy with this many undelivered events makes /readyz fail; "
        "the default is the proxies' own limit",
    )
    metrics_port: int | None = metrics_port_option()
    metrics_host: str = metrics_host_option()
    log_level: str = log_level_option()

    def service_settings(self) -> IngressSettings:
        token = self.token
        if self.token_file is not None:
            token = self.token_file.read_text().strip() or None
        return IngressSettings(
            shards=self.shards,
            limits=Limits(max_payload_bytes=self.max_payload_bytes),
            max_body_bytes=self.max_body_bytes,
            token=token,
            batch_window_s=self.batch_window_ms / 1000,
            batch_max_events=self.batch_max_events,
            batch_max_bytes=self.batch_max_bytes,
            in_flight=self.in_flight,
            max_queued=self.max_queued,
            ack_timeout_s=self.ack_timeout,
            retry_after_s=self.retry_after,
            ready_max_pending=self.ready_max_pending,
        )


def parse_args(argv: list[str] | None = None) -> IngressOptions:
    p = argparse.ArgumentParser(prog="python -m script.ingress", description=__doc__)
    add_options(p, IngressOptions)
    return from_args(IngressOptions, p.parse_args(argv), parser=p)


async def main(options: IngressOptions, sdk_metrics: str | None = None) -> None:
    settings = options.service_settings()
    metrics = None
    if options.metrics_port is not None:
        metrics = MetricsServer(
            host=options.metrics_host,
            port=options.metrics_port,
            sdk_address=sdk_metrics,
        )
        await metrics.start()
    # Lazy: the ingress comes up (and says it is not ready) while Temporal
    # is away, instead of failing to start.
    client = await connect(lazy=True)
    app = create_app(client, settings)
    # Requests still running at shutdown get their whole ack timeout to finish.
    runner = web.AppRunner(
        app,
        access_log=None,  # our middleware writes structured access logs
        handle_signals=False,
        shutdown_timeout=settings.ack_timeout_s + 2,
    )
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, backlog=1024)
    await site.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():  # a second signal: stop waiting
            log.warning("ingress forced to stop")
            exit_now(1)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    log.info(
        "ingress started",
        listening=[f"{host}:{port}" for host, port, *_ in runner.addresses],
        shards=settings.shards,
        batch_window_ms=settings.batch_window_s * 1000,
        batch_max_events=settings.batch_max_events,
        in_flight=settings.in_flight,
        ack_timeout_s=settings.ack_timeout_s,
        max_body_bytes=settings.max_body_bytes,
        token=settings.token is not None,
    )
    await stop.wait()
    log.info("ingress stopping")
    # Stops listening, lets requests in progress finish (their batches flush),
    # then runs the app's cleanup, which sends anything still queued.
    await runner.cleanup()
    if metrics is not None:
        await metrics.close()
    log.info("ingress stopped")


if __name__ == "__main__":
    options = parse_args()
    sdk_metrics = None if options.metrics_port is None else sdk_metrics_address()
    configure_logging(options.log_level, sdk_metrics=sdk_metrics)
    start_tracing("eventflow-ingress")
    asyncio.run(main(options, sdk_metrics))
    exit_now(0)
