"""Scenario 4: a ``script.consume`` process reading the Redis streams with a
consumer group is SIGKILLed while it holds records it has read but not
acknowledged, as the pipeline is still writing. A second consumer takes the
dead one's records over (XAUTOCLAIM after ``--min-idle-ms``) and follows the
streams to the end: every record is consumed at least once, and nothing is
left pending."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import msgspec
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
from tests.support.processes import ROOT, Emitter
from tests.support.records import redis_progress
from wire import RECORD_KINDS
from wire.synthetic import generate

GROUP = "eventflow-consume"
MIN_IDLE_MS = 2000
# Longer than one blocking read of a following consumer (5 s).
FOLLOW_IDLE_S = 7.0


class Consumer:
    """``python -m script.consume --follow`` with its stdout read by a thread
    that can be paused: a paused reader leaves the consumer blocked writing a
    batch it has not acknowledged, as a stuck downstream would."""

    def __init__(self, url: str, name: str, log: Path, *args: str) -> None:
        self.log = log
        with log.open("ab") as err:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "script.consume",
                    "--from",
                    url,
                    "--consumer",
                    name,
                    "--follow",
                    *args,
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.lines: list[bytes] = []
        # Lines the reader may still take; None: no limit.
        self._budget: int | None = None
        self._turn = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def allow(self, lines: int | None) -> None:
        """Let the reader take ``lines`` more lines, then stall (None: all)."""
        with self._turn:
            self._budget = lines
            self._turn.notify_all()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while True:
            with self._turn:
                self._turn.wait_for(lambda: self._budget is None or self._budget > 0)
                if self._budget is not None:
                    self._budget -= 1
            line = self.process.stdout.readline()
            if not line:
                return
            # A line cut short by the consumer's death was never output whole.
            if line.endswith(b"\n"):
                self.lines.append(line)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        # Whatever it wrote before dying is still in the pipe: it was output.
        self.allow(None)
        self._reader.join(timeout=30)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        return code


def record_id(line: bytes) -> str:
    record = msgspec.json.decode(line)
    return (
        record.get("result_id")
        or record.get("dead_letter_id")
        or record.get("summary_id")
    )


def out_lines(path: Path) -> list[bytes]:
    """The complete lines of a file a consumer appends to."""
    if not path.exists():
        return []
    return [x for x in path.read_bytes().splitlines(True) if x.endswith(b"\n")]


async def stream_bodies(url: str) -> dict[str, bytes]:
    """Record id -> the record as stored, over every stream (XRANGE)."""
    client = aioredis.from_url(url)
    try:
        bodies = {}
        for kind in RECORD_KINDS:
            for _id, fields in await client.xrange(stream_key("eventflow", kind)):
                bodies[fields[b"id"].decode()] = fields[b"record"]
        return bodies
    finally:
        await client.aclose()


async def pending(url: str) -> Counter[str]:
    """Entries delivered and not acknowledged, per consumer, over all streams."""
    client = aioredis.from_url(url)
    held: Counter[str] = Counter()
    try:
        for kind in RECORD_KINDS:
            summary = await client.xpending(stream_key("eventflow", kind), GROUP)
            for consumer in summary["consumers"]:
                held[consumer["name"].decode()] += int(consumer["pending"])
        return held
    finally:
        await client.aclose()


async def test_dead_consumers_pending_records_are_taken_over(
    file_dev_server, worker_process, redis_url: str, tmp_path: Path
) -> None:
    spec = workload(seed=14, run="consume-")
    lines, expected = generate(spec)
    address = file_dev_server.address
    args = ["--shards", "4", "--sink", redis_url, "--summary-interval", "1"]
    worker_process(address, args)
    emitter = Emitter(address, write_events(tmp_path, lines))
    first = Consumer(redis_url, "first", tmp_path / "first.log")
    second: Consumer | None = None
    try:
        # The first consumer keeps up while a third of the results land. Then
        # its reader stalls (the consumer blocks writing a batch), and records
        # pile up unread in the streams until two thirds have landed.
        jobs_n = len(expected.payloads)
        deadline = time.monotonic() + 300
        while (await redis_progress(redis_url)).results < jobs_n // 3:
            assert time.monotonic() < deadline, "no results before the stall"
            assert first.process.poll() is None, first.log.read_text()
            await asyncio.sleep(0.1)
        first.allow(0)
        while (await redis_progress(redis_url)).results < 2 * jobs_n // 3:
            assert time.monotonic() < deadline, "no results during the stall"
            await asyncio.sleep(0.1)
        # A little more reading lets it finish that batch and read the pile in
        # one go; it dies writing it, most of the pile unacknowledged.
        while (held := (await pending(redis_url))["first"]) < min(jobs_n // 6, 250):
            assert time.monotonic() < deadline, f"the first consumer held {held}"
            assert first.process.poll() is None, first.log.read_text()
            first.allow(10)
            await asyncio.sleep(0.2)
        first.allow(0)
        await asyncio.to_thread(first.kill)
        output_by_first = len(first.lines)
        # What it left behind, now that nothing can change it.
        held = (await pending(redis_url))["first"]

        # A supervisor starts a new consumer at once. The records the dead
        # one held are not claimable yet (idle less than --min-idle-ms): the
        # new one must come back for them while it follows the streams.
        out = tmp_path / "second.jsonl"
        second = Consumer(
            redis_url,
            "second",
            tmp_path / "second.log",
            "--out",
            str(out),
            "--min-idle-ms",
            str(MIN_IDLE_MS),
        )
        started = time.monotonic()

        summary = await asyncio.to_thread(emitter.wait, 300)
        assert summary["sent"] == len(lines)
        landed = all_landed(expected)
        deadline = time.monotonic() + 300
        while True:
            stored = await stream_bodies(redis_url)
            consumed = {record_id(x) for x in first.lines + out_lines(out)}
            if (
                landed(await redis_progress(redis_url))
                and consumed >= set(stored)
                and not sum((await pending(redis_url)).values())
            ):
                break
            assert second.process.poll() is None, second.log.read_text()
            assert time.monotonic() < deadline, (
                f"{len(set(stored) - consumed)} records not consumed, "
                f"{await pending(redis_url)} pending"
            )
            await asyncio.sleep(0.25)
        caught_up = time.monotonic()
        # Time for records that should not exist to appear (and be consumed),
        # longer than the follower's blocking read (5 s): it must keep
        # following through reads that find nothing new.
        await settle(
            lambda: redis_progress(redis_url), landed, limit_s=0, settle_s=FOLLOW_IDLE_S
        )
        assert second.process.poll() is None, second.log.read_text()
        stored = await stream_bodies(redis_url)
        assert second.stop() == 0, second.log.read_text()
    finally:
        for consumer in (first, second):
            if consumer is not None and consumer.process.poll() is None:
                consumer.process.kill()
                consumer.process.wait()

    by_first, by_second = first.lines, out_lines(out)
    ids_first = Counter(map(record_id, by_first))
    ids_second = Counter(map(record_id, by_second))
    union = {record_id(x): x for x in by_first + by_second}
    result = audit([msgspec.json.decode(x) for x in union.values()], expected)
    stored_audit = audit([msgspec.json.decode(x) for x in stored.values()], expected)
    again = len(set(ids_first) & set(ids_second))
    report(
        Row.of(
            "4. consumer death",
            result,
            events_sent=len(lines),
            faults=(
                f"SIGKILL of a consumer holding {held} unacknowledged records "
                f"({output_by_first} output in all); a second started at once "
                f"claims them after {MIN_IDLE_MS / 1000:g} s idle; {again} "
                "consumed twice"
            ),
            recovery_s=caught_up - started,
        )
    )
    # The second consumer claimed everything the first one held.
    claimed = sum(
        entry["count"]
        for line in second.log.read_bytes().splitlines()
        if line.startswith(b"{")
        and (entry := msgspec.json.decode(line)).get("event")
        == "claimed abandoned entries"
    )
    assert claimed == held > 0
    assert sum((await pending(redis_url)).values()) == 0, "all acknowledged"
    # At least once: together the two consumers output every record, each
    # byte for byte as stored; each consumer alone output a record once.
    assert set(union) == set(stored)
    assert all(stored[i] + b"\n" == line for i, line in union.items())
    assert max(ids_first.values()) == 1
    assert max(ids_second.values()) == 1
    # Only what the dead consumer held can have come out twice.
    assert again <= held
    assert stored_audit.clean, stored_audit.problems()
    assert result.clean, result.problems()
