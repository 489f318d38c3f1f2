"""Scenario 3: the Redis sink's server goes away mid-run, twice, and comes back
on the same port with its data (append-only file, fsync always). Sink writes
fail meanwhile; the activities retry with backoff, and afterwards every stream
holds each record id once and the sink exactly what the workload should
yield."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import redis.asyncio as aioredis

from sinks import stream_key
from tests.support.audit import audit
from tests.support.faults import (
    Row,
    all_landed,
    report,
    settle,
    workload,
    write_events,
)
from tests.support.processes import Emitter
from tests.support.records import redis_progress, redis_records
from wire import RECORD_KINDS
from wire.synthetic import generate

OUTAGES = 2
DOWN_S = 5.0


async def ids_per_stream(url: str) -> dict[str, Counter[str]]:
    """Every stream's entries counted by their ``id`` field (XRANGE)."""
    client = aioredis.from_url(url)
    try:
        return {
            kind: Counter(
                fields[b"id"].decode()
                for _id, fields in await client.xrange(stream_key("eventflow", kind))
            )
            for kind in RECORD_KINDS
        }
    finally:
        await client.aclose()


async def test_redis_down_twice_mid_run_loses_and_doubles_nothing(
    file_dev_server, worker_process, start_redis, tmp_path: Path
) -> None:
    spec = workload(seed=13, run="redis-")
    lines, expected = generate(spec)
    # Unlike the session server, this one keeps its data across a restart.
    server = start_redis(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    url = server.url
    address = file_dev_server.address
    args = ["--shards", "4", "--sink", url, "--summary-interval", "1"]
    worker = worker_process(address, args)
    emitter = Emitter(address, write_events(tmp_path, lines))

    # Stop Redis while results are landing: some written, many on their way.
    outages = 0
    for _ in range(OUTAGES):
        target = (outages + 1) * len(expected.payloads) // (OUTAGES + 2)
        deadline = time.monotonic() + 300
        while (await redis_progress(url)).results < target:
            assert time.monotonic() < deadline, "no progress before an outage"
            await asyncio.sleep(0.1)
        held = await redis_records(url)
        await asyncio.to_thread(server.stop)
        outages += 1
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(server.start)
        restarted = time.monotonic()
        # What was written before the stop is still there.
        assert len(await redis_records(url)) >= len(held), "records lost"

    summary = emitter.wait()
    assert summary["sent"] == len(lines)
    landed = await settle(lambda: redis_progress(url), all_landed(expected))

    records = await redis_records(url)
    streams = await ids_per_stream(url)
    result = audit(records, expected)
    report(
        Row.of(
            "3. Redis sink outage",
            result,
            events_sent=len(lines),
            faults=(
                f"{outages} x redis-server stopped mid-run for {DOWN_S:g} s, "
                "restarted with its append-only file"
            ),
            recovery_s=landed - restarted,
        )
    )
    assert worker.process is not None
    assert worker.process.poll() is None, (
        f"the worker exited:\n{worker.log.read_text()[-4000:]}"
    )
    doubled = {
        kind: [i for i, n in ids.items() if n > 1] for kind, ids in streams.items()
    }
    assert not any(doubled.values()), f"record ids added twice: {doubled}"
    assert sum(map(len, streams.values())) == len(records)
    assert result.clean, result.problems()
