"""``python -m script.consume`` as a real process against a real redis-server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import redis
import redis.asyncio as aioredis

from sinks import FileSink, RedisStreamSink, SinkRecord, stream_key
from sinks.consumer import StreamConsumer
from tests.support.processes import ROOT
from wire.records import RECORD_KINDS, DeadLetter, JobResult, Record, TenantSummary

GROUP = "eventflow-consume"


def make_records(count: int, *, start: int = 0) -> list[SinkRecord]:
    """``count`` records cycling through the three kinds."""
    records: list[Record] = []
    for n in range(start, start + count):
        if n % 3 == 0:
            records.append(
                JobResult(
                    result_id=f"t1/job-{n}/1",
                    tenant_id="t1",
                    job_id=f"job-{n}",
                    version=1,
                    status="complete",
                    events=2,
                    analyses={"ocr": {"text": f"page {n}"}},
                    required=["ocr"],
                    missing={},
                    opened_at="2025-01-01T00:00:00Z",
                    completed_at="2025-01-01T00:01:00Z",
                )
            )
        elif n % 3 == 1:
            records.append(
                TenantSummary(
                    summary_id=f"t{n}/2025-01-01T00:00:00Z",
                    tenant_id=f"t{n}",
                    window_start="2025-01-01T00:00:00Z",
                    window_end="2025-01-01T01:00:00Z",
                    jobs_completed=n,
                    jobs_timed_out=0,
                    jobs_amended=0,
                    events=n,
                    analyses={"ocr": n},
                    dead_letters=0,
                )
            )
        else:
            records.append(
                DeadLetter(
                    dead_letter_id=f"dl-{n}",
                    reason="not JSON",
                    source="edge",
                    raw="{nope\n" + "é" * n,
                    at="2025-01-01T00:00:00Z",
                )
            )
    return [SinkRecord.of(record) for record in records]


async def write_to_redis(url: str, records: list[SinkRecord]) -> None:
    async with RedisStreamSink(url) as sink:
        assert await sink.write(records) == len(records)


async def file_sink_lines(directory: Path, records: list[SinkRecord]) -> list[bytes]:
    """The lines the file sink writes for these records."""
    async with FileSink(directory, fsync=False) as sink:
        await sink.write(records)
    return [
        line
        for kind in RECORD_KINDS
        for line in (directory / f"{kind}.jsonl").read_bytes().splitlines(True)
    ]


def consume(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "script.consume", *args],
        cwd=ROOT,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def open_for_writing(path: Path) -> BinaryIO:
    return path.open("wb")


def line_count(path: Path) -> int:
    return len(path.read_bytes().splitlines())


def pending(url: str) -> int:
    """Entries read but not acknowledged in the group, over all streams."""
    with redis.Redis.from_url(url) as client:
        return sum(
            client.xpending(stream_key("eventflow", kind), GROUP)["pending"]
            for kind in RECORD_KINDS
        )


async def test_records_come_out_on_stdout_as_the_file_sinks_lines(
    redis_url: str, tmp_path: Path
) -> None:
    records = make_records(30)
    await write_to_redis(redis_url, records)

    result = consume("--from", redis_url)

    assert result.returncode == 0, result.stderr.decode()
    assert sorted(result.stdout.splitlines(True)) == sorted(
        await file_sink_lines(tmp_path, records)
    )
    assert pending(redis_url) == 0


async def test_out_appends_to_the_file(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    first, second = make_records(10), make_records(8, start=10)
    await write_to_redis(redis_url, first)
    assert consume("--from", redis_url, "--out", str(out)).returncode == 0
    await write_to_redis(redis_url, second)

    result = consume("--from", redis_url, "--out", str(out))

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
    assert sorted(out.read_bytes().splitlines(True)) == sorted(
        await file_sink_lines(tmp_path / "files", first + second)
    )
    assert pending(redis_url) == 0


async def test_records_a_dead_consumer_left_pending_are_claimed(
    redis_url: str, tmp_path: Path
) -> None:
    records = make_records(30)
    await write_to_redis(redis_url, records)
    # A consumer reads a batch and dies before acknowledging anything.
    client = aioredis.from_url(redis_url)
    try:
        dead = StreamConsumer(client, group=GROUP, consumer_name="dead", count=4)
        batches = dead.batches()
        assert len(await anext(batches)) == 4
        await batches.aclose()
    finally:
        await client.aclose()
    # One read of count 4 over three streams.
    assert pending(redis_url) == 12

    # The default idle time protects a live consumer's records from being taken.
    patient = consume("--from", redis_url, "--consumer", "patient")
    assert patient.returncode == 0, patient.stderr.decode()
    assert len(patient.stdout.splitlines()) == 18
    assert pending(redis_url) == 12

    rescuer = consume(
        "--from", redis_url, "--consumer", "rescuer", "--min-idle-ms", "0"
    )

    assert rescuer.returncode == 0, rescuer.stderr.decode()
    assert b"claimed abandoned entries" in rescuer.stderr
    assert sorted(
        patient.stdout.splitlines(True) + rescuer.stdout.splitlines(True)
    ) == sorted(await file_sink_lines(tmp_path, records))
    assert pending(redis_url) == 0


async def test_sigterm_stops_a_following_consumer_cleanly(
    redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "stdout"
    with open_for_writing(out) as stdout:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "script.consume", "--from", redis_url, "--follow"),
            cwd=ROOT,
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
    try:
        # Likely written while the consumer waits; its group starts at "0" anyway.
        await write_to_redis(redis_url, make_records(9))
        deadline = time.monotonic() + 15
        while line_count(out) < 9 or pending(redis_url):
            assert process.returncode is None, "the follower exited early"
            assert time.monotonic() < deadline, "the follower never caught up"
            await asyncio.sleep(0.02)

        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
    finally:
        if process.returncode is None:
            process.kill()

    assert process.returncode == 0, stderr.decode()
    assert b'"stopping"' in stderr
    assert line_count(out) == 9


def test_an_unreachable_redis_fails_with_exit_code_1() -> None:
    result = consume("--from", "redis://127.0.0.1:1/0")

    assert result.returncode == 1
    assert result.stdout == b""
    assert b"redis failed" in result.stderr
