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
import signal

import structlog

from actors.models import load_models
from actors.pipelines import load_pipeline
from runtime.cli import configure_logging, exit_now, start_tracing
from runtime.client import connect_within
from runtime.memory import limit_malloc_arenas
from runtime.metrics import MetricsServer, sdk_metrics_address
from runtime.retire import retire_shards
from runtime.search_attributes import (
    SearchAttributesMissing,
    ensure_search_attributes,
)
from runtime.settings import add_options, from_args
from runtime.worker import build_workers
from runtime.worker_settings import WorkerSettings
from sinks import Sink, open_sink, redact_url
from sinks.fanout import FanOutSink
from sinks.metrics import MeteredSink, sink_name
from sinks.sql import SchemaMismatch

log = structlog.get_logger("script.worker")


def parse_args(argv: list[str] | None = None) -> WorkerSettings:
    p = argparse.ArgumentParser(prog="python -m script.worker", description=__doc__)
    add_options(p, WorkerSettings)
    return from_args(WorkerSettings, p.parse_args(argv), parser=p)


def shards_to_run(shard: str, shards: int) -> list[int]:
    if shard == "all":
        return list(range(shards))
    chosen = sorted({int(n) for n in shard.split(",")})
    if not all(0 <= n < shards for n in chosen):
        raise SystemExit(f"--shard must be in 0..{shards - 1} or 'all', got {shard}")
    return chosen


async def main(settings: WorkerSettings, sdk_metrics: str | None = None) -> int:
    """Run until SIGINT/SIGTERM (or, with --retire, until the shards are
    retired); the process's exit code."""
    code = 0
    metrics = None
    if settings.metrics_port is not None:
        metrics = MetricsServer(
            host=settings.metrics_host,
            port=settings.metrics_port,
            sdk_address=sdk_metrics,
        )
        await metrics.start()
    config = settings.worker_config()
    pipeline = load_pipeline(config.pipeline)
    models = load_models(config.models, job_parts=config.job_parts)
    tables = [m.table for m in models]
    metered = [
        MeteredSink(open_sink(url, tables=tables), sink_name(url))
        for url in config.sinks
    ]
    sink: Sink = (
        metered[0]
        if len(metered) == 1
        else FanOutSink(metered, [redact_url(url) for url in config.sinks])
    )
    # The SQL sink creates its tables and checks the models' schemas here: a
    # model it can no longer write stops the worker before it connects.
    try:
        await sink.prepare()
    except Exception:
        await sink.close()
        raise
    client = await connect_within(settings.connect_timeout)
    await ensure_search_attributes(client)
    shards = shards_to_run(settings.shard, config.shards)
    workers = build_workers(
        client,
        config=config,
        sink=sink,
        pipeline=pipeline,
        models=models,
        shards=shards,
        entities=not settings.retire,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker started",
        shards=config.shards,
        serving=shards,
        sink=", ".join(redact_url(url) for url in config.sinks),
        pipeline=config.pipeline,
        models=[m.name for m in models],
    )
    async with contextlib.AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker)
        if settings.retire:
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
    if metrics is not None:
        await metrics.close()
    return code


if __name__ == "__main__":
    settings = parse_args()
    # Before any thread allocates: the SDK's runtime starts its threads on
    # the first connection (or the metrics address below).
    limit_malloc_arenas(settings.malloc_arenas)
    sdk_metrics = None if settings.metrics_port is None else sdk_metrics_address()
    configure_logging(settings.log_level, sdk_metrics=sdk_metrics)
    start_tracing("eventflow-worker")
    try:
        code = asyncio.run(main(settings, sdk_metrics))
    except (ConnectionError, SearchAttributesMissing, SchemaMismatch) as exc:
        log.error("cannot start", error=str(exc))
        exit_now(1)
    # The workers are shut down and the sink closed: skip the interpreter
    # teardown, which the SDK's native threads can abort (see exit_now).
    exit_now(code)
