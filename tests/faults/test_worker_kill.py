"""Scenario 1: the worker process is SIGKILLed mid-run, several times, and
restarted. Workflows resume from their histories, activities retry, and the
sink still holds exactly one result per job."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

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
from tests.support.records import file_progress, file_records
from wire.synthetic import generate

KILLS = 3


async def test_worker_killed_repeatedly_loses_and_doubles_nothing(
    file_dev_server, worker_process, tmp_path: Path
) -> None:
    spec = workload(seed=11, run="kill-")
    lines, expected = generate(spec)
    out = tmp_path / "out"
    address = file_dev_server.address
    args = ["--shards", "4", "--sink", f"file:{out}", "--summary-interval", "1"]
    worker = worker_process(address, args)
    emitter = Emitter(address, write_events(tmp_path, lines))

    # Kill while results are landing: some jobs done, many in flight.
    kills = 0
    for _ in range(KILLS):
        target = (kills + 1) * len(expected.payloads) // (KILLS + 2)
        deadline = time.monotonic() + 300
        while (await file_progress(out)).results < target:
            assert time.monotonic() < deadline, "no progress before a kill"
            await asyncio.sleep(0.1)
        worker.kill()
        kills += 1
        await asyncio.sleep(1.0)
        worker.start()
    restarted = time.monotonic()

    summary = emitter.wait()
    assert summary["sent"] == len(lines)
    landed = await settle(lambda: file_progress(out), all_landed(expected))

    result = audit(file_records(out), expected)
    report(
        Row.of(
            "1. worker SIGKILL",
            result,
            events_sent=len(lines),
            faults=f"{kills} x SIGKILL of the worker, restarted after 1 s",
            recovery_s=landed - restarted,
        )
    )
    assert result.clean, result.problems()
