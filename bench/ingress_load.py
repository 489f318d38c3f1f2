"""Load the HTTP ingress the way Pub/Sub does: one event per request.

``python -m script.ingress_load --url http://127.0.0.1:8080 --concurrency 64
--jobs N --out DIR`` generates a synthetic workload (``wire.synthetic``), sends
each event as its own Pub/Sub push envelope (or ``--endpoint events``: its own
``POST /events``) over ``--concurrency`` connections, retries 503s and
connection errors after ``Retry-After`` as a push subscription would, and
watches the file sink ``DIR`` until every job's ``job.result`` has appeared.

It prints one JSON report on stdout: requests, status counts, request
latencies, and events per minute both acknowledged (first request to last 2xx)
and end to end (first request to the last new ``job.result`` line in
``DIR``). Bodies are built before the clock starts. The token, if the ingress
wants one, comes from EVENTFLOW_INGRESS_TOKEN.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import msgspec

from ingress.service import TOKEN_ENV
from runtime.cli import (
    add_workload_arguments,
    configure_logging,
    positive_int,
    workload_from,
)
from wire.synthetic import generate

_encode = msgspec.json.Encoder().encode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m script.ingress_load", description=__doc__
    )
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--concurrency", type=positive_int, default=64)
    add_workload_arguments(p, tenants=50, jobs=1000)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the worker's file sink directory, watched for job.result lines "
        "(without it, only acknowledgements are measured)",
    )
    p.add_argument("--endpoint", choices=("pubsub", "events"), default="pubsub")
    p.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds before the run gives up (default %(default)s)",
    )
    p.add_argument("--log-level", default=None)
    return p.parse_args(argv)


def push_envelope(event: bytes, message_id: str, subscription: str) -> bytes:
    """A Pub/Sub push body carrying ``event``, as Pub/Sub sends it."""
    published = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return _encode(
        {
            "message": {
                "data": base64.b64encode(event).decode(),
                "attributes": {},
                "messageId": message_id,
                "message_id": message_id,
                "publishTime": published,
                "publish_time": published,
            },
            "subscription": subscription,
        }
    )


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    acknowledged: int = 0
    latencies: list[float] = field(default_factory=list)
    first: float | None = None
    last_ack: float | None = None


async def send_one(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    tally: Tally,
    deadline: float,
) -> bool:
    """Send until a 2xx or 4xx (as Pub/Sub would: 5xx and errors retry)."""
    while time.monotonic() < deadline:
        started = time.monotonic()
        tally.first = tally.first or started
        tally.requests += 1
        retry_after = 1.0
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                status = response.status
                retry_after = float(response.headers.get("Retry-After", "1"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.statuses[type(exc).__name__] += 1
            await asyncio.sleep(0.5)
            continue
        tally.statuses[str(status)] += 1
        if status < 300:
            now = time.monotonic()
            tally.latencies.append(now - started)
            tally.acknowledged += 1
            tally.last_ack = now
            return True
        if status < 500:
            return False
        await asyncio.sleep(retry_after)
    return False


class ResultWatcher:
    """Counts ``job.result`` lines as a file sink appends them."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / "job.result.jsonl"
        self._offset = 0
        self.lines = 0
        self.last_seen: float | None = None
        self.poll()
        self.baseline = self.lines
        self.last_seen = None

    def poll(self) -> None:
        try:
            with self._path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        # Only whole lines: the writer may be in the middle of one.
        end = chunk.rfind(b"\n") + 1
        if end:
            self._offset += end
            self.lines += chunk[:end].count(b"\n")
            self.last_seen = time.monotonic()

    @property
    def new(self) -> int:
        return self.lines - self.baseline


async def main(args: argparse.Namespace) -> dict[str, object]:
    run = args.run if args.run is not None else f"{int(time.time())}-"
    spec = workload_from(args, run=run)
    lines, _expected = generate(spec)
    url = args.url.rstrip("/") + (
        "/pubsub/push" if args.endpoint == "pubsub" else "/events"
    )
    bodies = (
        [
            push_envelope(line, f"{run}{n}", "projects/load/subscriptions/ingress")
            for n, line in enumerate(lines)
        ]
        if args.endpoint == "pubsub"
        else lines
    )
    headers = {"Content-Type": "application/json"}
    token = os.environ.get(TOKEN_ENV)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    watcher = ResultWatcher(args.out) if args.out is not None else None
    tally = Tally()
    deadline = time.monotonic() + args.timeout
    next_body = iter(bodies)
    failed = 0

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        for body in next_body:
            if not await send_one(session, url, body, headers, tally, deadline):
                failed += 1

    async def watch(w: ResultWatcher) -> None:
        # Polling a file another process appends to: nothing to wait on. The
        # time of the last new line is known to within one poll.
        while w.new < args.jobs and time.monotonic() < deadline:
            w.poll()
            await asyncio.sleep(0.05)

    watching = asyncio.create_task(watch(watcher)) if watcher is not None else None
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(sender(session) for _ in range(args.concurrency)))
    if watching is not None:
        await watching
    first = tally.first or time.monotonic()
    acked_s = (tally.last_ack or first) - first
    latencies = sorted(tally.latencies) or [0.0]

    def pct(q: float) -> float:
        return round(
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1
        )

    report: dict[str, object] = {
        "url": url,
        "concurrency": args.concurrency,
        "jobs": args.jobs,
        "events": len(bodies),
        "requests": tally.requests,
        "statuses": dict(tally.statuses),
        "acknowledged": tally.acknowledged,
        "failed": failed,
        "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        "acknowledged_s": round(acked_s, 2),
        "acknowledged_events_per_minute": round(tally.acknowledged / acked_s * 60)
        if acked_s
        else None,
    }
    if watcher is not None:
        end_s = (watcher.last_seen or first) - first
        report |= {
            "results": watcher.new,
            "end_to_end_s": round(end_s, 2),
            "end_to_end_events_per_minute": round(len(bodies) / end_s * 60)
            if end_s and watcher.new >= args.jobs
            else None,
        }
    return report


def cli() -> None:
    """The command line: ``python -m script.ingress_load``."""
    args = parse_args()
    configure_logging(args.log_level)
    result = asyncio.run(main(args))
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    sys.exit(0 if result["failed"] == 0 else 1)
