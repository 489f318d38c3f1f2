"""Send events: ``python -m script.emit --file PATH`` or ``--generate``.

Events are validated at the edge and sent through the shard proxies in
micro-batches; invalid ones travel too, to be dead-lettered with their
reason. With ``--json`` a summary ``{"sent", "accepted", "duplicates",
"rejected"}`` is printed at the end. ``duplicates`` counts the redeliveries
the proxies recognised; the jobs drop any others.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterable

import aiofiles
import msgspec
import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from ingress.sender import EventSender
from runtime.cli import (
    ClientSettings,
    add_workload_arguments,
    configure_logging,
    exit_now,
    positive_int,
    start_tracing,
    workload_from,
)
from runtime.client import connect_within
from runtime.settings import add_options, from_args
from wire.synthetic import generate
from wire.validate import Limits

log = structlog.get_logger("script.emit")


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ClientSettings, argparse.Namespace]:
    """The shared client settings (shards, connect timeout, log level), and
    the rest of the options."""
    p = argparse.ArgumentParser(prog="python -m script.emit", description=__doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="JSON Lines file of events, '-' for stdin")
    source.add_argument(
        "--generate", action="store_true", help="send a synthetic workload"
    )
    add_options(p, ClientSettings)
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=500,
        help="events per update at most (default %(default)s)",
    )
    p.add_argument(
        "--in-flight",
        type=positive_int,
        default=4,
        help="updates in flight per shard (default %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument(
        "--max-payload-bytes",
        type=positive_int,
        default=Limits().max_payload_bytes,
        help="largest analysis payload; larger events are dead-lettered "
        "(default %(default)s)",
    )
    g = p.add_argument_group("--generate")
    add_workload_arguments(g, tenants=5, jobs=50)
    g.add_argument("--rate", type=float, default=None, help="events per second cap")
    args = p.parse_args(argv)
    return from_args(ClientSettings, args, parser=p), args


async def read_lines(path: str) -> AsyncIterator[bytes]:
    if path == "-":
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.buffer.readline):
            yield line
        return
    async with aiofiles.open(path, "rb") as f:
        async for line in f:
            yield line


async def paced(lines: Iterable[bytes], rate: float | None) -> AsyncIterator[bytes]:
    start = time.monotonic()
    for n, line in enumerate(lines):
        if rate and n % 100 == 0:
            ahead = n / rate - (time.monotonic() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)
        yield line


async def main(settings: ClientSettings, args: argparse.Namespace) -> dict[str, int]:
    client = await connect_within(settings.connect_timeout)
    total: int | None = None
    if args.generate:
        spec = workload_from(args, run=args.run or "")
        generated, _ = generate(spec)
        total = len(generated)
        lines: AsyncIterator[bytes] = paced(generated, args.rate)
    else:
        lines = read_lines(args.file)
    progress = Progress(
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not sys.stderr.isatty(),
        console=Console(stderr=True),
    )
    with progress:
        task = progress.add_task("events", total=total)
        sender = EventSender(
            client,
            shards=settings.shards,
            limits=Limits(max_payload_bytes=args.max_payload_bytes),
            batch_size=args.batch_size,
            in_flight=args.in_flight,
            on_ack=lambda n, _ack: progress.advance(task, n),
        )
        summary = await sender.send_all(lines)
    return summary.as_dict()


if __name__ == "__main__":
    settings, args = parse_args()
    configure_logging(settings.log_level)
    start_tracing("eventflow-emit")
    try:
        result = asyncio.run(main(settings, args))
    except ConnectionError as exc:
        log.error("cannot send", error=str(exc))
        exit_now(1)
    if args.json:
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    else:
        print(
            f"sent {result['sent']}: {result['accepted']} accepted, "
            f"{result['duplicates']} duplicates, {result['rejected']} rejected",
            file=sys.stderr,
        )
    exit_now(0)
