"""Print or save the records the Redis stream sink holds.

    python -m script.consume --from redis://localhost:6379/0
    python -m script.consume --from redis://localhost:6379/0 --out out.jsonl --follow

Each record comes out as one JSON line, the same bytes the file sink writes.
Records are acknowledged in the consumer group only after they are written
(and, with ``--out``, fsynced): a consumer that dies leaves its records pending
and the next one takes them over (``--min-idle-ms``). Logs go to stderr;
stdout carries only records.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Sequence

import aiofiles
import redis.asyncio as aioredis
import structlog
from aiofiles.threadpool.binary import AsyncBufferedIOBase
from redis.exceptions import RedisError

from runtime.cli import configure_logging
from sinks.consumer import StreamConsumer
from sinks.redis_streams import redact_url

log = structlog.get_logger(__name__)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m script.consume", description=__doc__.split("\n\n")[0]
    )
    from_env = os.environ.get("EVENTFLOW_SINK", "")
    parser.add_argument(
        "--from",
        dest="url",
        # From the environment by default: a password on the command line is
        # visible to every local user (ps).
        default=from_env if from_env.startswith(("redis://", "rediss://")) else None,
        help="redis://[:password@]host:port/db or rediss://... (default: "
        "EVENTFLOW_SINK, the workers' sink, when it is a Redis URL)",
    )
    parser.add_argument(
        "--group",
        default="eventflow-consume",
        help="consumer group (default: %(default)s)",
    )
    parser.add_argument(
        "--consumer",
        default=f"{socket.gethostname()}-{os.getpid()}",
        help="consumer name (default: HOSTNAME-PID)",
    )
    parser.add_argument(
        "--prefix", default="eventflow", help="sink key prefix (default: %(default)s)"
    )
    parser.add_argument("--out", help="append records to this file instead of stdout")
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep waiting for new records until stopped",
    )
    parser.add_argument(
        "--min-idle-ms",
        type=int,
        default=30_000,
        help="take over records another consumer left pending this long, in ms "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: $EVENTFLOW_LOG_LEVEL, else info",
    )
    args = parser.parse_args(argv)
    if args.url is None:
        parser.error("--from is required (or EVENTFLOW_SINK set to a Redis URL)")
    if not args.url.startswith(("redis://", "rediss://")):
        parser.error(
            f"--from must be a redis:// or rediss:// URL, got {redact_url(args.url)!r}"
        )
    if args.min_idle_ms < 0:
        parser.error("--min-idle-ms must be >= 0")
    return args


class _StdoutOutput:
    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(_write_stdout, data)

    async def close(self) -> None:
        pass


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


class _FileOutput:
    def __init__(self, file: AsyncBufferedIOBase) -> None:
        self._file = file

    async def write(self, data: bytes) -> None:
        await self._file.write(data)
        await self._file.flush()
        await asyncio.to_thread(os.fsync, self._file.fileno())

    async def close(self) -> None:
        await self._file.close()


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


async def _consume(args: argparse.Namespace) -> int:
    client = aioredis.from_url(args.url)
    consumer = StreamConsumer(
        client,
        prefix=args.prefix,
        group=args.group,
        consumer_name=args.consumer,
        min_idle_ms=args.min_idle_ms,
    )
    _handle_signals(consumer)
    output: _StdoutOutput | _FileOutput = (
        _FileOutput(await aiofiles.open(args.out, "ab"))
        if args.out
        else _StdoutOutput()
    )
    log.info(
        "consuming",
        url=redact_url(args.url),
        group=args.group,
        consumer=args.consumer,
        out=args.out or "-",
        follow=args.follow,
    )
    total = 0
    try:
        async for batch in consumer.batches(follow=args.follow):
            await output.write(b"".join(entry.record + b"\n" for entry in batch))
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
