"""Reading back what a sink holds, for assertions."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec
import redis.asyncio as aioredis

from sinks import stream_key
from wire import RECORD_KINDS


def file_records(directory: Path) -> list[dict]:
    records = []
    for kind in RECORD_KINDS:
        path = directory / f"{kind}.jsonl"
        if path.exists():
            records += [
                msgspec.json.decode(line) for line in path.read_bytes().splitlines()
            ]
    return records


async def redis_records(url: str, prefix: str = "eventflow") -> list[dict]:
    client = aioredis.from_url(url)
    try:
        records = []
        for kind in RECORD_KINDS:
            for _id, fields in await client.xrange(stream_key(prefix, kind)):
                records.append(msgspec.json.decode(fields[b"record"]))
        return records
    finally:
        await client.aclose()


def by_kind(records: list[dict]) -> Counter[str]:
    return Counter(r["type"] for r in records)


async def wait_for(
    read: Callable[[], object],
    done: Callable[[list[dict]], bool],
    *,
    timeout: float,
    settle: float = 2.0,
) -> list[dict]:
    """Poll ``read`` until ``done`` holds, then once more after ``settle``
    seconds, so records that should not exist have had time to appear."""
    deadline = time.monotonic() + timeout
    while True:
        records = read()
        if asyncio.iscoroutine(records):
            records = await records
        if done(records):  # type: ignore[arg-type]
            break
        if time.monotonic() > deadline:
            return records  # type: ignore[return-value]
        await asyncio.sleep(0.5)
    await asyncio.sleep(settle)
    records = read()
    if asyncio.iscoroutine(records):
        records = await records
    return records  # type: ignore[return-value]
