"""Scenario 2: the Temporal server is SIGKILLed while the emitter is sending,
twice, and restarted on the same port with its state (SQLite) kept. The
emitter retries until every batch is acknowledged, the worker reconnects, and
the sink holds exactly one result per job and one dead letter per invalid
event: nothing acknowledged before an outage is lost."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import threading
import time
from pathlib import Path

from tests.support.audit import audit
from tests.support.faults import Row, all_landed, report, settle, workload
from tests.support.processes import Emitter
from tests.support.records import file_progress, file_records
from wire import Rejection, parse_event
from wire.synthetic import generate

OUTAGES = 2
# Seconds the server stays dead before its restart begins.
DOWN_S = 3.0
# Events per second into the emitter's file (about 22 s of sending at the
# quick scale), so that both outages fall while it is still sending.
FEED_RATE = 100


class Feed(threading.Thread):
    """Writes the events into a FIFO that the emitter reads as its file, at a
    steady pace; ``written`` says how many lines have gone in so far.

    (The emitter itself sends as fast as the server answers: from a plain
    file it would be done in a few seconds, before any fault.)"""

    def __init__(self, fifo: Path, lines: list[bytes], duration_s: float) -> None:
        super().__init__(daemon=True)
        self.fifo = fifo
        self.lines = lines
        self.duration_s = duration_s
        self.written = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            fd = self._open(timeout_s=60)
            try:
                chunks = 100
                size = -(-len(self.lines) // chunks)
                for start in range(0, len(self.lines), size):
                    chunk = self.lines[start : start + size]
                    data = b"".join(line + b"\n" for line in chunk)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    self.written += len(chunk)
                    time.sleep(self.duration_s / chunks)
            finally:
                os.close(fd)
        except BaseException as exc:  # the test reports it
            self.error = exc

    def _open(self, *, timeout_s: float) -> int:
        # Non-blocking until the emitter has opened its end (a blocking open
        # would hang the test forever if the emitter never starts); blocking
        # writes after that, so the feed waits when the emitter does.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
            return fd


async def test_server_killed_while_sending_loses_nothing_acknowledged(
    file_dev_server, worker_process, tmp_path: Path
) -> None:
    spec = workload(seed=12, run="restart-")
    lines, expected = generate(spec)
    parsed = [parse_event(line) for line in lines]
    refused_at_edge = sum(isinstance(p, Rejection) for p in parsed)
    unique_valid = len({p.event_id for p in parsed if not isinstance(p, Rejection)})

    out = tmp_path / "out"
    address = file_dev_server.address
    args = ["--shards", "4", "--sink", f"file:{out}", "--summary-interval", "1"]
    worker = worker_process(address, args)
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    # Quiet: the emitter's stderr is a pipe read only at the end, and the
    # retries during an outage would log a line each.
    emitter = Emitter(address, fifo, "--log-level", "warning")
    feed = Feed(fifo, lines, len(lines) / FEED_RATE)
    feed.start()

    outages = 0
    downtime = 0.0
    try:
        for _ in range(OUTAGES):
            target = (outages + 1) * len(lines) // (OUTAGES + 2)
            deadline = time.monotonic() + 300
            while feed.written < target:
                assert feed.is_alive(), f"the feed stopped: {feed.error!r}"
                assert emitter.running(), "the emitter exited before the outage"
                assert time.monotonic() < deadline, "the feed made no progress"
                await asyncio.sleep(0.05)
            assert emitter.running(), "the emitter finished before the outage"
            killed = time.monotonic()
            await asyncio.to_thread(file_dev_server.kill)
            outages += 1
            await asyncio.sleep(DOWN_S)
            await asyncio.to_thread(file_dev_server.start)
            restarted = time.monotonic()
            downtime += restarted - killed

        summary = await asyncio.to_thread(emitter.wait, 300)
        feed.join(timeout=60)
        assert feed.error is None, f"the feed failed: {feed.error!r}"
        landed = await settle(
            lambda: file_progress(out), all_landed(expected), limit_s=300
        )
    finally:
        if emitter.running():
            emitter.process.kill()
            _, err = emitter.process.communicate()
            print("the emitter's log, cut short:\n", err.decode()[-4000:])
        # Free the feed if the emitter never read (or stopped reading) the FIFO.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))

    worker_alive = worker.process is not None and worker.process.poll() is None
    result = audit(file_records(out), expected)
    report(
        Row.of(
            "2. Temporal server restart",
            result,
            events_sent=len(lines),
            faults=(
                f"{outages} x SIGKILL of the Temporal server while sending, "
                f"restarted after {DOWN_S:g} s (down {downtime / outages:.1f} s "
                "each with start-up)"
            ),
            recovery_s=landed - restarted,
        )
    )
    assert worker_alive, f"the worker exited:\n{worker.log.read_text()[-4000:]}"
    # After a server restart the worker can take longer than the fixture's
    # 30 s to stop gracefully (long polls opened against the old server); a
    # graceful stop is not what this scenario is about.
    worker.kill()

    assert summary["sent"] == len(lines)
    assert (
        summary["accepted"] + summary["duplicates"] + summary["rejected"]
        == summary["sent"]
    ), summary
    assert summary["rejected"] == refused_at_edge, summary
    assert summary["accepted"] + summary["duplicates"] == len(lines) - refused_at_edge
    # An event is accepted once at most, even when its batch was resent.
    assert summary["accepted"] <= unique_valid, (summary, unique_valid)
    assert result.clean, result.problems()
