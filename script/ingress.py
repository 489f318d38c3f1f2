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
import os
import signal
from pathlib import Path

import structlog
from aiohttp import web

from actors.settings import WorkerConfig, env_float, env_int
from ingress import DEFAULT_MAX_BODY_BYTES, IngressSettings, create_app
from runtime.cli import (
    add_shards_argument,
    configure_logging,
    exit_now,
    positive_int,
)
from runtime.client import connect
from wire.validate import DEFAULT_MAX_PAYLOAD_BYTES, Limits

log = structlog.get_logger("script.ingress")

TOKEN_ENV = "EVENTFLOW_INGRESS_TOKEN"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m script.ingress", description=__doc__)
    defaults = IngressSettings()
    p.add_argument(
        "--host",
        default=os.environ.get("EVENTFLOW_INGRESS_HOST") or "127.0.0.1",
        help="address to listen on (env EVENTFLOW_INGRESS_HOST; default "
        "%(default)s; 0.0.0.0 for every interface)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=env_int("EVENTFLOW_INGRESS_PORT", env_int("PORT", 8080)),
        help="port (env EVENTFLOW_INGRESS_PORT, or PORT as Cloud Run sets it; "
        "default %(default)s; 0 picks a free one)",
    )
    add_shards_argument(p)
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=env_float(
            "EVENTFLOW_INGRESS_BATCH_WINDOW_MS", defaults.batch_window_s * 1000
        ),
        help="how long a shard's batch waits for more events after its first "
        "(env EVENTFLOW_INGRESS_BATCH_WINDOW_MS; default %(default)s)",
    )
    p.add_argument(
        "--batch-max-events",
        type=positive_int,
        default=env_int(
            "EVENTFLOW_INGRESS_BATCH_MAX_EVENTS", defaults.batch_max_events
        ),
        help="events per update at most; a full batch goes at once "
        "(env EVENTFLOW_INGRESS_BATCH_MAX_EVENTS; default %(default)s)",
    )
    p.add_argument(
        "--batch-max-bytes",
        type=positive_int,
        default=env_int("EVENTFLOW_INGRESS_BATCH_MAX_BYTES", defaults.batch_max_bytes),
        help="bytes per update at most (env EVENTFLOW_INGRESS_BATCH_MAX_BYTES; "
        "default %(default)s)",
    )
    p.add_argument(
        "--in-flight",
        type=positive_int,
        default=env_int("EVENTFLOW_INGRESS_IN_FLIGHT", defaults.in_flight),
        help="updates in flight per shard (env EVENTFLOW_INGRESS_IN_FLIGHT; "
        "default %(default)s; Temporal allows 10 per workflow in all)",
    )
    p.add_argument(
        "--max-queued",
        type=positive_int,
        default=env_int("EVENTFLOW_INGRESS_MAX_QUEUED", defaults.max_queued),
        help="events waiting per shard past which requests get 503 at once "
        "(env EVENTFLOW_INGRESS_MAX_QUEUED; default %(default)s)",
    )
    p.add_argument(
        "--ack-timeout",
        type=float,
        default=env_float("EVENTFLOW_INGRESS_ACK_TIMEOUT_S", defaults.ack_timeout_s),
        help="seconds a request waits for its update before 503; keep it under "
        "the subscription's ack deadline (env EVENTFLOW_INGRESS_ACK_TIMEOUT_S; "
        "default %(default)s)",
    )
    p.add_argument(
        "--retry-after",
        type=positive_int,
        default=env_int("EVENTFLOW_INGRESS_RETRY_AFTER_S", defaults.retry_after_s),
        help="Retry-After seconds of a 503 (env EVENTFLOW_INGRESS_RETRY_AFTER_S; "
        "default %(default)s)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=positive_int,
        default=env_int("EVENTFLOW_INGRESS_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
        help="larger request bodies get 413 (env EVENTFLOW_INGRESS_MAX_BODY_BYTES; "
        "default %(default)s, room for Pub/Sub's largest message)",
    )
    p.add_argument(
        "--max-payload-bytes",
        type=positive_int,
        default=env_int("EVENTFLOW_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES),
        help="largest analysis payload; larger events are dead-lettered "
        "(env EVENTFLOW_MAX_PAYLOAD_BYTES; default %(default)s)",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help=f"file holding the shared access token (or env {TOKEN_ENV}); "
        "without either, every request is let in",
    )
    p.add_argument(
        "--ready-max-pending",
        type=positive_int,
        default=env_int(
            "EVENTFLOW_INGRESS_READY_MAX_PENDING", WorkerConfig().max_pending
        ),
        help="a proxy with this many undelivered events makes /readyz fail "
        "(default %(default)s, the workers' limit)",
    )
    p.add_argument("--log-level", default=None)
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> IngressSettings:
    token = os.environ.get(TOKEN_ENV) or None
    if args.token_file is not None:
        token = args.token_file.read_text().strip() or None
    return IngressSettings(
        shards=args.shards,
        limits=Limits(max_payload_bytes=args.max_payload_bytes),
        max_body_bytes=args.max_body_bytes,
        token=token,
        batch_window_s=args.batch_window_ms / 1000,
        batch_max_events=args.batch_max_events,
        batch_max_bytes=args.batch_max_bytes,
        in_flight=args.in_flight,
        max_queued=args.max_queued,
        ack_timeout_s=args.ack_timeout,
        retry_after_s=args.retry_after,
        ready_max_pending=args.ready_max_pending,
    )


async def main(args: argparse.Namespace) -> None:
    settings = settings_from(args)
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
    site = web.TCPSite(runner, args.host, args.port, backlog=1024)
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
    log.info("ingress stopped")


if __name__ == "__main__":
    args = parse_args()
    configure_logging(args.log_level)
    asyncio.run(main(args))
    exit_now(0)
