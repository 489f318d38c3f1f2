"""Reading back what a sink holds, for assertions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec
import redis.asyncio as aioredis

from sinks import stream_key
from wire import RECORD_KINDS


@dataclass(frozen=True)
class Progress:
    """Cheap counts to poll on, without decoding every record."""

    results: int
    dead_letters: int
    jobs_completed: int


def file_records(directory: Path) -> list[dict]:
    records = []
    for kind in RECORD_KINDS:
        path = directory / f"{kind}.jsonl"
        if path.exists():
            records += [msgspec.json.decode(x) for x in path.read_bytes().splitlines()]
    return records


async def file_progress(directory: Path) -> Progress:
    def lines(kind: str) -> list[bytes]:
        path = directory / f"{kind}.jsonl"
        return path.read_bytes().splitlines() if path.exists() else []

    summaries = [msgspec.json.decode(x) for x in lines("tenant.summary")]
    return Progress(
        results=len(lines("job.result")),
        dead_letters=len(lines("dead_letter")),
        jobs_completed=sum(s["jobs_completed"] for s in summaries),
    )


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


async def redis_progress(url: str, prefix: str = "eventflow") -> Progress:
    client = aioredis.from_url(url)
    try:
        summaries = await client.xrange(stream_key(prefix, "tenant.summary"))
        return Progress(
            results=await client.xlen(stream_key(prefix, "job.result")),
            dead_letters=await client.xlen(stream_key(prefix, "dead_letter")),
            jobs_completed=sum(
                msgspec.json.decode(fields[b"record"])["jobs_completed"]
                for _id, fields in summaries
            ),
        )
    finally:
        await client.aclose()
