"""Scenario 6: a real worker process whose entities all continue-as-new at a
history length of 20: proxies, jobs and tenants roll over many times while
batches, deliveries and rollup reports keep arriving (a proxy pushes back
while it drains, the emitter retries). Nothing is lost or counted twice."""

from __future__ import annotations

import functools
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import msgspec
from temporalio.client import Client

from actors import routing
from tests.support.audit import audit
from tests.support.faults import (
    Row,
    all_landed,
    jobs,
    report,
    settle,
)
from tests.support.processes import ROOT
from tests.support.records import file_progress, file_records
from tests.support.temporal import address_of
from wire.synthetic import Expected, WorkloadSpec, generate

HISTORY_LIMIT = 20
SHARDS = 4


TENANTS = 5
# The events go in bursts with quiet gaps between them (BurstEmitter).
BURSTS = jobs(7, 30)
BURST_S = jobs(4.0, 12.0)
GAP_S = 7.0


def workload() -> tuple[list[bytes], Expected]:
    """Two kinds of jobs, interleaved evenly over the whole stream.

    Long-lived jobs have their events spread over the whole run, so each
    takes many deliveries and continues-as-new many times. Short jobs open a
    few at a time and complete all along the run, so rollup reports reach the
    tenants all along too. Both have many parts, redeliveries, results before
    job.opened and invalid events.
    """
    spec = functools.partial(
        WorkloadSpec,
        tenants=TENANTS,
        types=4,
        parts=10,
        duplicates=0.05,
        early=0.3,
        invalid=0.01,
    )
    n_long, n_short = jobs(20, 200), jobs(40, 400)
    long_lines, expected = generate(
        spec(jobs=n_long, open_jobs=n_long, seed=6, run="can-long-")
    )
    short_lines, short = generate(
        spec(jobs=n_short, open_jobs=4, seed=66, run="can-short-")
    )
    expected.payloads.update(short.payloads)
    expected.dead_letters += short.dead_letters
    # Merge by relative position, each stream keeping its own order.
    rng = random.Random(6)
    keyed = [
        (i / len(part) + rng.random() * 1e-6, line)
        for part in (long_lines, short_lines)
        for i, line in enumerate(part)
    ]
    keyed.sort(key=lambda pair: pair[0])
    return [x for _, x in keyed], expected


class BurstEmitter:
    """``python -m script.emit --file - --json`` fed in bursts: each burst
    paced over ``burst_s``, then ``gap_s`` of quiet.

    During a burst, updates keep arriving at every entity (and the proxies
    continue-as-new every second or so); in a gap the proxies stay in one run
    long enough to report the tenants' rollups, which they do at most every
    5 s (the worker's rollup interval). Without gaps the tenants would hear of
    nothing until the end: each proxy run starts the 5 s anew, so a proxy
    that continues-as-new more often than that never reports while busy
    (the rollups wait in its state; nothing is lost, only late).
    """

    def __init__(
        self,
        address: str,
        lines: list[bytes],
        log: Path,
        *,
        bursts: int,
        burst_s: float,
        gap_s: float,
    ) -> None:
        self.log = log
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "script.emit",
                    "--file",
                    "-",
                    "--json",
                    "--shards",
                    str(SHARDS),
                    # Small, frequent batches: many updates per proxy run.
                    "--batch-size",
                    "20",
                ],
                cwd=ROOT,
                env={**os.environ, "TEMPORAL_ADDRESS": address},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # A file, not a pipe: the emitter logs every pushed-back
                # batch, and a full pipe would stall it.
                stderr=stderr,
            )
        self._feeder = threading.Thread(
            target=self._feed, args=(lines, bursts, burst_s, gap_s), daemon=True
        )
        self._feeder.start()

    def _feed(
        self, lines: list[bytes], bursts: int, burst_s: float, gap_s: float
    ) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        size = -(-len(lines) // bursts)
        step = 20
        for b in range(bursts):
            burst = lines[b * size : (b + 1) * size]
            start = time.monotonic()
            for i in range(0, len(burst), step):
                ahead = start + burst_s * i / len(burst) - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                stdin.write(b"".join(x + b"\n" for x in burst[i : i + step]))
                stdin.flush()
            if b < bursts - 1:
                time.sleep(gap_s)
        stdin.close()

    def wait(self, timeout: float = 1200) -> dict:
        self._feeder.join(timeout)
        assert self.process.stdout is not None
        out = self.process.stdout.read()  # stdin is closed: it ends
        if self.process.wait(timeout) != 0:
            raise RuntimeError(
                f"emit failed ({self.process.returncode}):\n{self.log.read_text()}"
            )
        return msgspec.json.decode(out)


async def runs_per_workflow(client: Client) -> Counter[str]:
    """Runs per workflow id: each continue-as-new is one more run."""
    runs: Counter[str] = Counter()
    async for execution in client.list_workflows():
        runs[execution.id] += 1
    return runs


async def test_everything_continuing_as_new_constantly_loses_and_doubles_nothing(
    temporal, worker_process, tmp_path: Path
) -> None:
    lines, expected = workload()
    out = tmp_path / "out"
    address = address_of(temporal)
    worker_process(
        address,
        [
            "--shards",
            str(SHARDS),
            "--sink",
            f"file:{out}",
            "--summary-interval",
            "1",
            "--continue-as-new-after",
            str(HISTORY_LIMIT),
            # A short hold: a job's events then reach it in many deliveries,
            # so jobs continue as new too (held until complete, each job is
            # about one delivery and never needs to).
            "--proxy-hold",
            "0.5",
        ],
    )
    emitter = BurstEmitter(
        address,
        lines,
        tmp_path / "emit.log",
        bursts=BURSTS,
        burst_s=BURST_S,
        gap_s=GAP_S,
    )
    summary = emitter.wait()
    sent = time.monotonic()
    assert summary["sent"] == len(lines)
    landed = await settle(lambda: file_progress(out), all_landed(expected))
    runs = await runs_per_workflow(temporal.client)

    result = audit(file_records(out), expected)
    kinds = {"proxy": [], "job": [], "tenant": []}
    # A job's runs across its generations (a closed job reopened by a late
    # refusal) count as the job's.
    per_job: Counter[str] = Counter()
    for workflow_id, n in runs.items():
        job = routing.job_of_run_id(workflow_id)
        if job is None:
            kinds[workflow_id.split("/", 1)[0]].append(n)
        else:
            per_job[f"{job[0]}/{job[1]}"] += n
    kinds["job"] = list(per_job.values())
    report(
        Row.of(
            "6. continue-as-new storm",
            result,
            events_sent=len(lines),
            faults=(
                f"every entity continues-as-new at {HISTORY_LIMIT} history events "
                "(proxies hold a job 0.5 s, `--proxy-hold 0.5`): "
                f"{sum(kinds['proxy'])} proxy runs ({len(kinds['proxy'])} proxies), "
                f"{sum(kinds['job'])} job runs ({len(kinds['job'])} jobs), "
                f"{sum(kinds['tenant'])} tenant runs ({len(kinds['tenant'])} "
                f"tenants); events sent in {BURSTS} bursts of {BURST_S:g} s, "
                f"{GAP_S:g} s apart; recovery = last event sent to last record"
            ),
            recovery_s=max(0.0, landed - sent),
        )
    )
    assert result.clean, result.problems()
    records = file_records(out)
    summaries = [r for r in records if r["type"] == "tenant.summary"]
    assert sum(s["events"] for s in summaries) == sum(
        expected.events(key) for key in expected.payloads
    )
    assert {r["version"] for r in records if r["type"] == "job.result"} == {1}
    # Every entity really rolled over, many times.
    spread = {kind: sorted(ns) for kind, ns in kinds.items()}
    print("runs per workflow:", spread)
    assert len(kinds["proxy"]) == SHARDS
    assert min(kinds["proxy"]) >= 5, spread
    assert len(kinds["tenant"]) == TENANTS
    assert min(kinds["tenant"]) >= 3, spread
    assert len(kinds["job"]) == len(expected.payloads)
    assert sum(n > 1 for n in kinds["job"]) >= len(kinds["job"]) // 2, spread
    # The long-lived jobs took updates all along the run.
    long_lived = [n for key, n in per_job.items() if "-long-" in key]
    assert sum(n >= 5 for n in long_lived) >= len(long_lived) // 2, sorted(long_lived)
