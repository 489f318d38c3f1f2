"""The HTTP ingress against ``script.emit``: ``python -m script.bench --ingress``.

The same synthetic workload (``wire.synthetic``: 50 tenants, jobs of
``job.opened`` + 3 types x 2 parts) goes through the real pipeline twice,
each time on a fresh stack (file-backed dev server, one worker serving every
shard, the file sink), taking turns ``--rounds`` times so that drift on the
machine falls on both alike:

* **ingress**: ``python -m script.ingress`` (its defaults: 4 shards, a 5 ms
  window, one update in flight per shard), loaded the way a Pub/Sub push
  subscription loads it: one event per request over ``--concurrency`` (64)
  connections (``bench.ingress_load``);
* **emit**: what ``script.emit --generate`` does (``ingress.sender.EventSender``
  at its defaults, as emit uses it: 500 events per update, 4 in flight per
  shard), in this process like the load generator.

Each is timed from its first event sent to the moment the sink holds every
job's ``job.result`` (polled every 50 ms), and its CPU counted over the
same span (worker, server, and the ingress process or this one). The figure
is ingress end-to-end events/min as a share of emit's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil
from temporalio.client import Client

from bench import ingress_load
from bench.run import (
    ROOT,
    SHARDS,
    console,
    free_port,
    pipeline_workers,
    report,
    stack,
)
from ingress.sender import EventSender
from runtime.cli import configure_logging, exit_now, workload_from
from wire import DATA_CONVERTER
from wire.synthetic import generate


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


async def _ready(url: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/readyz") as r:
                    if r.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ingress at {url} was not ready")
            await asyncio.sleep(0.2)


def _workload(args: argparse.Namespace, run: str) -> list[str]:
    return [
        *("--jobs", str(args.jobs), "--tenants", str(args.tenants)),
        *("--types", "3", "--parts", "2", "--seed", str(args.seed), "--run", run),
    ]


def _figures(
    *,
    events: int,
    jobs: int,
    results: int,
    seconds: float,
    cpu0: tuple[float, float, float],
    cpu1: tuple[float, float, float],
) -> dict[str, object]:
    per_1k = 1000 / events
    return {
        "events": events,
        "jobs": jobs,
        "results": results,
        "seconds": round(seconds, 2),
        "events_per_min": round(events / seconds * 60) if results >= jobs else None,
        "worker_cpu_s_per_1k": round((cpu1[0] - cpu0[0]) * per_1k, 3),
        "server_cpu_s_per_1k": round((cpu1[1] - cpu0[1]) * per_1k, 3),
        "sender_cpu_s_per_1k": round((cpu1[2] - cpu0[2]) * per_1k, 3),
    }


def _workers(root: Path) -> list[list[str]]:
    return pipeline_workers(1, f"file:{root / 'out'}")


async def run_ingress(args: argparse.Namespace, run: str) -> dict[str, object]:
    with stack(_workers) as s:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with (s.root / "ingress.log").open("wb") as log:
            ingress = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "script.ingress",
                *("--port", str(port), "--shards", str(SHARDS)),
                *("--log-level", "warning"),
                cwd=ROOT,
                env={**os.environ, "TEMPORAL_ADDRESS": s.address},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            await _ready(url)
            load = ingress_load.parse_args(
                [
                    *("--url", url, "--concurrency", str(args.concurrency)),
                    *("--out", str(s.sink)),
                    *_workload(args, run),
                ]
            )
            cpu0 = (*s.cpu(), _cpu(ingress.pid))
            got = await ingress_load.main(load)
            cpu1 = (*s.cpu(), _cpu(ingress.pid))
            seconds = float(got["end_to_end_s"])  # type: ignore[arg-type]
        finally:
            ingress.terminate()
            await asyncio.wait_for(ingress.wait(), 20)
    figures = _figures(
        events=int(got["events"]),  # type: ignore[call-overload]
        jobs=args.jobs,
        results=int(got["results"]),  # type: ignore[call-overload]
        seconds=seconds,
        cpu0=cpu0,
        cpu1=cpu1,
    )
    figures["acknowledged"] = got["acknowledged"]
    figures["acknowledged_events_per_min"] = got["acknowledged_events_per_minute"]
    figures["statuses"] = got["statuses"]
    figures["request_latency_ms"] = got["latency_ms"]
    return figures


async def run_emit(args: argparse.Namespace, run: str) -> dict[str, object]:
    lines, _ = generate(
        workload_from(ingress_load.parse_args(_workload(args, run)), run=run)
    )
    me = psutil.Process()
    with stack(_workers) as s:
        watcher = ingress_load.ResultWatcher(s.sink)
        client = await Client.connect(s.address, data_converter=DATA_CONVERTER)
        sender = EventSender(client, shards=SHARDS)

        async def watch() -> None:
            deadline = time.monotonic() + args.timeout
            while watcher.new < args.jobs and time.monotonic() < deadline:
                watcher.poll()
                await asyncio.sleep(0.05)

        cpu0 = (*s.cpu(), _cpu(me.pid))
        t0 = time.monotonic()
        watching = asyncio.create_task(watch())
        for line in lines:
            await sender.send(line)
        await sender.flush()
        summary = sender.summary.as_dict()
        await watching
        cpu1 = (*s.cpu(), _cpu(me.pid))
        seconds = (watcher.last_seen or time.monotonic()) - t0
    figures = _figures(
        events=int(summary["sent"]),
        jobs=args.jobs,
        results=watcher.new,
        seconds=seconds,
        cpu0=cpu0,
        cpu1=cpu1,
    )
    figures["summary"] = summary
    return figures


async def compare(args: argparse.Namespace) -> dict[str, object]:
    rounds: list[dict[str, object]] = []
    for n in range(args.rounds):
        row: dict[str, object] = {}
        for name, runner in (("ingress", run_ingress), ("emit", run_emit)):
            console.log(f"[bold]round {n + 1}: {name}[/bold]")
            row[name] = await runner(args, f"{name}-{n}-")
            console.log(
                {k: row[name][k] for k in ("events_per_min", "seconds", "results")}  # type: ignore[index]
            )
        rounds.append(row)
    shares = [
        r["ingress"]["events_per_min"] / r["emit"]["events_per_min"]  # type: ignore[index,operator]
        for r in rounds
        if r["ingress"]["events_per_min"] and r["emit"]["events_per_min"]  # type: ignore[index]
    ]
    return {
        "settings": {
            "jobs": args.jobs,
            "tenants": args.tenants,
            "concurrency": args.concurrency,
            "shards": SHARDS,
        },
        "rounds": rounds,
        "ingress_share_of_emit": [round(x, 3) for x in shares],
    }


def markdown(result: dict[str, object]) -> str:
    out = [
        "| round | sender | events | seconds | end-to-end events/min "
        "| acknowledged events/min | worker CPU s/1k | server CPU s/1k "
        "| sender CPU s/1k |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, row in enumerate(result["rounds"], 1):  # type: ignore[arg-type]
        for name in ("ingress", "emit"):
            f = row[name]
            rate = f["events_per_min"]
            acked = f.get("acknowledged_events_per_min")
            out.append(
                f"| {n} | {name} | {f['events']:,} | {f['seconds']} "
                f"| {f'{rate:,}' if rate else 'incomplete'} "
                f"| {f'{acked:,}' if acked else ''} | {f['worker_cpu_s_per_1k']} "
                f"| {f['server_cpu_s_per_1k']} | {f['sender_cpu_s_per_1k']} |"
            )
    shares = ", ".join(f"{x:.0%}" for x in result["ingress_share_of_emit"])  # type: ignore[attr-defined]
    out.append(f"\nIngress end to end as a share of `script.emit`: {shares}.")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m script.bench --ingress", description=__doc__
    )
    p.add_argument("--ingress", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--tenants", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--out", help="also write the JSON results here")
    p.add_argument("--markdown", action="store_true", help="the table, to stderr")
    return p.parse_args(argv)


def cli() -> None:
    args = parse_args()
    configure_logging("warning")
    report(asyncio.run(compare(args)), args, markdown)
    exit_now(0)
