"""Shared pieces of the fault scenarios: the workload size, waiting for the
sink to settle, and the report row each scenario adds to RELIABILITY.md's
table (``python -m tests.faults.report`` renders the rows). The background
emitter is ``tests.support.processes.Emitter``."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.support.audit import Audit
from tests.support.polling import wait_until
from tests.support.records import Progress
from wire.synthetic import Expected, WorkloadSpec

# `quick` (the default, what CI runs) or `full` (`make faults`).
SCALE = os.environ.get("EVENTFLOW_FAULT_SCALE", "quick")
# Where scenarios append their report rows (JSON Lines), when set.
REPORT = os.environ.get("EVENTFLOW_FAULT_REPORT")


def jobs(quick: int, full: int) -> int:
    """The job count of a scenario at the current scale."""
    return full if SCALE == "full" else quick


def workload(*, seed: int, run: str, quick_jobs: int = 300) -> WorkloadSpec:
    """The scenarios' common workload: 10 tenants, jobs of 3 types x 2 parts,
    5% redeliveries and 1% invalid events, ``quick_jobs`` jobs (10 times as
    many at full scale). ``run`` keeps its job ids apart from other runs'."""
    return WorkloadSpec(
        tenants=10,
        jobs=jobs(quick_jobs, quick_jobs * 10),
        types=3,
        parts=2,
        duplicates=0.05,
        invalid=0.01,
        seed=seed,
        run=run,
    )


def write_events(directory: Path, lines: list[bytes]) -> Path:
    path = directory / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def all_landed(expected: Expected) -> Callable[[Progress], bool]:
    """Whether the sink has at least every record the workload should yield."""
    jobs = len(expected.payloads)

    def done(p: Progress) -> bool:
        return (
            p.results >= jobs
            and p.dead_letters >= expected.dead_letters
            and p.jobs_completed >= jobs
        )

    return done


async def settle(
    progress: Callable[[], Awaitable[Progress]],
    done: Callable[[Progress], bool],
    *,
    limit_s: float = 600,
    settle_s: float = 3.0,
) -> float:
    """Poll until ``done`` holds or ``limit_s`` passes; then wait ``settle_s``
    more, so that records that should not exist have time to appear.
    Returns the monotonic time at which ``done`` first held (or the limit).

    ``wait_until`` with the fault scenarios' defaults."""
    landed = await wait_until(
        progress, done, limit_s=limit_s, settle_s=settle_s, interval_s=0.25
    )
    return landed.at


@dataclass(frozen=True)
class Row:
    scenario: str
    events_sent: int
    faults: str
    records_expected: int
    lost: int
    duplicated: int
    wrong: int
    recovery_s: float
    scale: str = SCALE

    @classmethod
    def of(
        cls,
        scenario: str,
        audit: Audit,
        *,
        events_sent: int,
        faults: str,
        recovery_s: float,
    ) -> Row:
        return cls(
            scenario=scenario,
            events_sent=events_sent,
            faults=faults,
            records_expected=audit.expected_records,
            lost=audit.lost_records,
            duplicated=audit.duplicated_records,
            wrong=len(audit.wrong),
            recovery_s=round(recovery_s, 1),
        )


def report(row: Row) -> None:
    """Append the scenario's figures to the report file, when one is set."""
    if REPORT:
        with open(REPORT, "a") as out:
            out.write(json.dumps(asdict(row)) + "\n")
