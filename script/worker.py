"""Run workers: ``python -m script.worker --shards M --shard N|all``.

Connection settings come from the SDK's standard environment variables
(TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*...),
so the same command runs against a local dev server, a cluster or Temporal
Cloud.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal

import structlog

from actors.pipelines import DEFAULT as DEFAULT_PIPELINE
from actors.pipelines import load_pipeline
from actors.rules.job import JobSettings
from actors.rules.tenant import TenantSettings
from actors.settings import DEFAULT_SINK, WorkerConfig, env_float
from runtime.cli import (
    add_connect_timeout_argument,
    add_shards_argument,
    configure_logging,
    exit_now,
    positive_int,
)
from runtime.client import connect_within
from runtime.retire import retire_shards
from runtime.worker import build_workers
from sinks import open_sink, redact_url

log = structlog.get_logger("script.worker")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m script.worker", description=__doc__)
    add_shards_argument(p)
    p.add_argument(
        "--shard",
        default="all",
        help="the shard(s) this process serves: N, a list N,N,... or 'all' (default)",
    )
    p.add_argument(
        "--sink",
        default=_env("EVENTFLOW_SINK", DEFAULT_SINK),
        # The default is shown redacted: it may carry a password.
        help="file:DIR or redis://host:port/db (env EVENTFLOW_SINK; default "
        + redact_url(_env("EVENTFLOW_SINK", DEFAULT_SINK)).replace("%", "%%")
        + ")",
    )
    p.add_argument(
        "--pipeline",
        default=_env("EVENTFLOW_PIPELINE", DEFAULT_PIPELINE),
        help="module:function turning a job's parts into its record "
        "(default %(default)s)",
    )
    p.add_argument(
        "--job-deadline",
        type=float,
        default=env_float("EVENTFLOW_JOB_DEADLINE_S", 3600.0),
        help="seconds before an incomplete job times out, unless its job.opened "
        "says otherwise (default %(default)s)",
    )
    p.add_argument(
        "--job-linger",
        type=float,
        default=env_float("EVENTFLOW_JOB_LINGER_S", 3600.0),
        help="seconds a finished job stays open for late events (default %(default)s)",
    )
    p.add_argument(
        "--summary-interval",
        type=float,
        default=env_float("EVENTFLOW_SUMMARY_INTERVAL_S", 60.0),
        help="seconds per tenant.summary window (default %(default)s)",
    )
    p.add_argument(
        "--continue-as-new-after",
        type=positive_int,
        default=None,
        help="history length at which every entity continues-as-new, besides "
        "when Temporal suggests it (for tests; default: only when suggested)",
    )
    p.add_argument(
        "--proxy-hold",
        type=float,
        default=env_float("EVENTFLOW_PROXY_HOLD_S", 0.5),
        help="longest a job's events wait in their proxy for the rest of the "
        "job; a complete job goes at once (default %(default)s)",
    )
    p.add_argument(
        "--retire",
        action="store_true",
        help="after the shard count has shrunk: serve the --shard list (shards "
        "that no longer exist) until their proxies have delivered and reported "
        "everything they hold and no workflow is left on their task queues, "
        "then close them and exit",
    )
    add_connect_timeout_argument(p)
    p.add_argument("--log-level", default=None)
    return p.parse_args(argv)


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def config_from(args: argparse.Namespace) -> WorkerConfig:
    return WorkerConfig(
        shards=args.shards,
        sink=args.sink,
        pipeline=args.pipeline,
        job=JobSettings(
            default_deadline_s=args.job_deadline,
            linger_s=args.job_linger,
            continue_as_new_after=args.continue_as_new_after,
        ),
        tenant=TenantSettings(
            summary_interval_s=args.summary_interval,
            continue_as_new_after=args.continue_as_new_after,
        ),
        proxy_continue_as_new_after=args.continue_as_new_after,
        hold_s=args.proxy_hold,
    )


def shards_to_run(shard: str, shards: int) -> list[int]:
    if shard == "all":
        return list(range(shards))
    chosen = sorted({int(n) for n in shard.split(",")})
    if not all(0 <= n < shards for n in chosen):
        raise SystemExit(f"--shard must be in 0..{shards - 1} or 'all', got {shard}")
    return chosen


async def main(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM (or, with --retire, until the shards are
    retired); the process's exit code."""
    code = 0
    config = config_from(args)
    pipeline = load_pipeline(config.pipeline)
    client = await connect_within(args.connect_timeout)
    sink = open_sink(config.sink)
    shards = shards_to_run(args.shard, config.shards)
    workers = build_workers(
        client,
        config=config,
        sink=sink,
        pipeline=pipeline,
        shards=shards,
        entities=not args.retire,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker started",
        shards=config.shards,
        serving=shards,
        sink=redact_url(config.sink),
        pipeline=config.pipeline,
    )
    async with contextlib.AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker)
        if args.retire:
            retiring = asyncio.create_task(retire_shards(client, shards))
            await asyncio.wait(
                [retiring, asyncio.create_task(stop.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not retiring.done():
                retiring.cancel()
                log.warning("retirement interrupted; run it again to finish")
                code = 1
            elif (error := retiring.exception()) is not None:
                log.error("retirement failed; run it again", error=str(error))
                code = 1
        else:
            await stop.wait()
        log.info("worker stopping")
    await sink.close()
    return code


if __name__ == "__main__":
    args = parse_args()
    configure_logging(args.log_level)
    try:
        code = asyncio.run(main(args))
    except ConnectionError as exc:
        log.error("cannot start", error=str(exc))
        exit_now(1)
    # The workers are shut down and the sink closed: skip the interpreter
    # teardown, which the SDK's native threads can abort (see exit_now).
    exit_now(code)
