"""Print, save or load into another sink the records the Redis stream sink holds.

    python -m script.consume --from redis://localhost:6379/0
    python -m script.consume --from redis://localhost:6379/0 --out out.jsonl --follow
    python -m script.consume --from redis://localhost:6379/0 --follow \
        --to postgresql://eventflow@db:5432/results

Each record comes out as one JSON line, the same bytes the file sink writes.
With ``--to``, records and the model tables' rows (``--model``, as the workers
were given, and the built-in ``job_parts``) go into that sink instead, exactly
once per record id. Records are acknowledged in the consumer group only after
they are written (and, with ``--out``, fsynced; with ``--to``, committed): a
consumer that dies leaves its records pending and the next one takes them
over (``--min-idle-ms``), and the sink skips what it already holds. Logs go to
stderr; stdout carries only records.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import aiofiles
import redis.asyncio as aioredis
import structlog
from aiofiles.threadpool.binary import AsyncBufferedIOBase
from redis.exceptions import RedisError

from actors.models import load_models
from runtime.cli import (
    SINK_ENV,
    configure_logging,
    log_level_option,
    models_option,
    no_job_parts_option,
)
from runtime.settings import add_options, from_args, option
from sinks import Sink, open_sink
from sinks.base import known_kinds
from sinks.consumer import StreamConsumer, StreamEntry
from sinks.redis_streams import redact_url
from sinks.sql import SchemaMismatch
from wire.records import RECORD_KINDS

log = structlog.get_logger(__name__)


def _is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://"))


def _first_redis_url(sinks: str) -> str | None:
    """The first Redis URL of the workers' sink list (``EVENTFLOW_SINK``
    holds one URL or several, comma-separated)."""
    return next(
        (url for url in map(str.strip, sinks.split(",")) if _is_redis_url(url)),
        None,
    )


@dataclass(frozen=True, kw_only=True)
class ConsumeSettings:
    """What ``python -m script.consume`` is told."""

    url: str | None = option(
        None,
        flag="--from",
        # From the environment by default: a password on the command line is
        # visible to every local user (ps).
        env=SINK_ENV,
        env_pick=_first_redis_url,
        parse=str,
        show=redact_url,
        repr=False,
        metavar="URL",
        help="redis://[:password@]host:port/db or rediss://...; the variable is "
        "the workers' sink list, whose first Redis URL is used",
    )
    group: str = option("eventflow-consume", flag="--group", help="consumer group")
    consumer: str = option(
        flag="--consumer",
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        parse=str,
        shown_default="HOSTNAME-PID",
        help="consumer name",
    )
    prefix: str = option("eventflow", flag="--prefix", help="sink key prefix")
    out: str | None = option(
        None,
        flag="--out",
        parse=str,
        metavar="FILE",
        shown_default="stdout",
        help="append records to this file instead of stdout",
    )
    to: str | None = option(
        None,
        flag="--to",
        env="EVENTFLOW_CONSUME_TO",
        parse=str,
        show=redact_url,
        repr=False,
        metavar="URL",
        help="write into this sink (any worker sink URL: postgresql://, "
        "sqlite:, file:, redis://) instead of printing",
    )
    models: tuple[str, ...] = models_option()
    no_job_parts: bool = no_job_parts_option()
    follow: bool = option(
        False, flag="--follow", help="keep waiting for new records until stopped"
    )
    min_idle_ms: int = option(
        30_000,
        flag="--min-idle-ms",
        metavar="MS",
        help="take over records another consumer left pending this long, in ms",
    )
    log_level: str = log_level_option(choices=("debug", "info", "warning", "error"))


def _parse_args(argv: Sequence[str] | None) -> ConsumeSettings:
    parser = argparse.ArgumentParser(
        prog="python -m script.consume", description=__doc__.split("\n\n")[0]
    )
    add_options(parser, ConsumeSettings)
    settings = from_args(ConsumeSettings, parser.parse_args(argv), parser=parser)
    if settings.url is None:
        parser.error(f"--from is required (or {SINK_ENV} set to a Redis URL)")
    if not _is_redis_url(settings.url):
        parser.error(
            "--from must be a redis:// or rediss:// URL, got "
            f"{redact_url(settings.url)!r}"
        )
    if settings.min_idle_ms < 0:
        parser.error("--min-idle-ms must be >= 0")
    if settings.to is not None and settings.out is not None:
        parser.error("--to and --out are alternatives: give one")
    return settings


class _StdoutOutput:
    async def write(self, entries: list[StreamEntry]) -> None:
        await asyncio.to_thread(_write_stdout, _lines(entries))

    async def close(self) -> None:
        pass


def _lines(entries: list[StreamEntry]) -> bytes:
    return b"".join(entry.record + b"\n" for entry in entries)


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


class _FileOutput:
    def __init__(self, file: AsyncBufferedIOBase) -> None:
        self._file = file

    async def write(self, entries: list[StreamEntry]) -> None:
        await self._file.write(_lines(entries))
        await self._file.flush()
        await asyncio.to_thread(os.fsync, self._file.fileno())

    async def close(self) -> None:
        await self._file.close()


class _SinkOutput:
    """Into another sink: exactly once per record id, so entries read again
    after a crash (never acknowledged) are skipped there."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    async def write(self, entries: list[StreamEntry]) -> None:
        await self._sink.write([entry.as_sink_record() for entry in entries])

    async def close(self) -> None:
        await self._sink.close()


Output = _StdoutOutput | _FileOutput | _SinkOutput


async def _open_output(args: ConsumeSettings) -> tuple[Output, list[str]]:
    """Where records go, and the kinds (streams) to read for it."""
    if args.to is None:
        output = (
            _FileOutput(await aiofiles.open(args.out, "ab"))
            if args.out
            else _StdoutOutput()
        )
        return output, list(RECORD_KINDS)
    models = load_models(args.models, job_parts=not args.no_job_parts)
    tables = [m.table for m in models]
    sink = open_sink(args.to, tables=tables)
    try:
        await sink.prepare()
    except BaseException:
        await sink.close()
        raise
    return _SinkOutput(sink), list(known_kinds(tables))


def _handle_signals(consumer: StreamConsumer) -> None:
    """First signal: finish the batch in hand, then stop. Second: stop now."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    received = 0

    def on_signal(signum: int) -> None:
        nonlocal received
        received += 1
        log.info("stopping", signal=signal.Signals(signum).name, forced=received > 1)
        if received == 1:
            consumer.stop()
        elif main_task is not None:
            # Records written but not yet acknowledged stay pending: at least once.
            main_task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


async def _consume(args: ConsumeSettings) -> int:
    assert args.url is not None  # _parse_args saw to it
    try:
        output, kinds = await _open_output(args)
    except (ValueError, OSError, SchemaMismatch) as error:
        log.error("cannot write there", to=redact_url(args.to or ""), error=str(error))
        return 2
    client = aioredis.from_url(args.url)
    consumer = StreamConsumer(
        client,
        prefix=args.prefix,
        group=args.group,
        consumer_name=args.consumer,
        kinds=kinds,
        min_idle_ms=args.min_idle_ms,
    )
    _handle_signals(consumer)
    log.info(
        "consuming",
        url=redact_url(args.url),
        group=args.group,
        consumer=args.consumer,
        out=redact_url(args.to) if args.to else args.out or "-",
        follow=args.follow,
    )
    total = 0
    try:
        async for batch in consumer.batches(follow=args.follow):
            await output.write(batch)
            # Only now are the records stored; acking earlier could lose them.
            await consumer.ack(batch[0].stream, [entry.entry_id for entry in batch])
            total += len(batch)
    except BrokenPipeError:
        # The reader went away (`| head`); the unacknowledged batch stays pending.
        # Point stdout at /dev/null so the interpreter's final flush does not fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        log.warning("stdout closed; stopping", records=total)
    except RedisError as error:
        log.error("redis failed", error=str(error), records=total)
        return 1
    except Exception as error:  # the sink written to (it retries inside first)
        log.error(
            "write failed; the batch in hand stays pending for the next consumer",
            error=f"{type(error).__name__}: {error}"[:500],
            records=total,
        )
        return 1
    finally:
        await output.close()
        await client.aclose()
    log.info("done", records=total)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the consumer; returns the process exit code."""
    args = _parse_args(argv)
    configure_logging(args.log_level)
    try:
        return asyncio.run(_consume(args))
    except asyncio.CancelledError:
        return 130


if __name__ == "__main__":
    sys.exit(main())
