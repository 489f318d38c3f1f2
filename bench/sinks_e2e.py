"""The workloads end to end with each sink: ``python -m script.bench --sinks``.

The same workload goes through the real pipeline (file-backed dev server,
one worker process serving every shard, sent as fast as the proxies take it)
once per sink: the JSON Lines files, SQLite (``sqlite:`` in the run's
directory) and PostgreSQL (a private, durable server this run starts:
``bench.postgres``; or ``--postgres URL``, one fresh schema per run). The
sinks take turns within each workload, so that drift on the machine falls on
all of them alike. Events per minute run from the first event sent to the
moment the sink holds every job's result (polled every 0.2 s: a count of
lines, or of ``job_results`` rows); each SQL figure is also shown as a share
of the file sink's in the same run, the issue's measure.

Workloads: ``burst`` (41-event jobs, as in ``bench.run``) and
``acceptance`` (the end-to-end tests' workload: 3 types x 2 parts, 5%
redelivered, 30% of jobs with results before ``job.opened``, 1% invalid).
Both make the built-in ``job_parts`` rows as well as the records.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import psutil
from temporalio.client import Client

from bench.postgres import PostgresServer
from bench.run import SHARDS, WORKLOADS, Stack, pipeline_workers, report, stack
from ingress.sender import EventSender
from runtime.cli import configure_logging, exit_now
from wire import DATA_CONVERTER
from wire.synthetic import ACCEPTANCE, WorkloadSpec, generate

SPECS: dict[str, WorkloadSpec] = {
    "burst": replace(WORKLOADS["burst"], jobs=2000),
    "acceptance": ACCEPTANCE,
}
SINKS = ("file", "sqlite", "postgresql")
POLL_S = 0.2


def _count_lines(path: Path) -> Callable[[], Awaitable[int]]:
    seen = [0, 0]  # bytes read, lines counted

    async def count() -> int:
        try:
            with path.open("rb") as f:
                f.seek(seen[0])
                chunk = f.read()
        except FileNotFoundError:
            return 0
        seen[0] += len(chunk)
        seen[1] += chunk.count(b"\n")
        return seen[1]

    return count


def _count_sqlite(path: Path) -> Callable[[], Awaitable[int]]:
    def count() -> int:
        if not path.exists():
            return 0
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
            ) as db:
                return int(db.execute("SELECT count(*) FROM job_results").fetchone()[0])
        except sqlite3.OperationalError:
            return 0  # the worker has not created the table yet

    async def counted() -> int:
        return await asyncio.to_thread(count)

    return counted


def _count_postgres(url: str, schema: str) -> Callable[[], Awaitable[int]]:
    connection: list[asyncpg.Connection] = []

    async def count() -> int:
        if not connection:
            connection.append(await asyncpg.connect(url))
        value = await connection[0].fetchval(
            f'SELECT count(*) FROM "{schema}".job_results'
        )
        return int(value)

    return count


class _Server:
    """The CPU of a PostgreSQL server's processes (postmaster and backends)."""

    def __init__(self, server: PostgresServer | None) -> None:
        self.server = server

    def cpu(self) -> float:
        if self.server is None or self.server.pid is None:
            return 0.0  # not ours to watch (--postgres), or not a SQL run
        total = 0.0
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.server.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    t = p.cpu_times()
                    total += t.user + t.system
        return total


async def _drive(
    s: Stack,
    lines: list[bytes],
    jobs: int,
    held: Callable[[], Awaitable[int]],
    database: _Server,
    *,
    limit_s: float,
) -> dict[str, object]:
    client = await Client.connect(s.address, data_converter=DATA_CONVERTER)
    sender = EventSender(client, shards=SHARDS)
    cpu0, db0 = s.cpu(), database.cpu()
    t0 = time.monotonic()
    for line in lines:
        await sender.send(line)
    await sender.flush()
    sent_s = time.monotonic() - t0
    deadline = t0 + limit_s
    results = await held()
    while results < jobs and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)
        s.sample_rss()
        results = await held()
    elapsed = time.monotonic() - t0
    cpu1, db1 = s.cpu(), database.cpu()
    events = len(lines)
    return {
        "events": events,
        "jobs": jobs,
        "results": results,
        "seconds": round(elapsed, 2),
        "send_seconds": round(sent_s, 2),
        "events_per_min": round(events / elapsed * 60) if elapsed else 0,
        "worker_cpu_s_per_1k": round((cpu1[0] - cpu0[0]) / events * 1000, 3),
        "server_cpu_s_per_1k": round((cpu1[1] - cpu0[1]) / events * 1000, 3),
        "database_cpu_s_per_1k": round((db1 - db0) / events * 1000, 3),
        "peak_worker_rss_mib": round(s.peak_rss / 2**20, 1),
    }


@contextlib.contextmanager
def _postgres(url: str | None) -> Iterator[tuple[str, PostgresServer | None]]:
    if url is not None:
        yield url, None
        return
    server = PostgresServer(durable=True)
    server.start()
    try:
        yield server.new_database(), server
    finally:
        server.stop()


async def run_sinks(
    workloads: dict[str, WorkloadSpec],
    *,
    sinks: tuple[str, ...] = SINKS,
    postgres: str | None = None,
    limit_s: float = 1800,
) -> dict[str, dict[str, object]]:
    """Every workload through every sink; figures by ``"{workload}/{sink}"``."""
    results: dict[str, dict[str, object]] = {}
    wanted = postgres if "postgresql" in sinks else "postgresql://unused"
    with _postgres(wanted) as (pg, server):
        for name, spec in workloads.items():
            lines, _ = generate(spec)
            for n, sink in enumerate(sinks):
                schema = f"bench_{name}_{n}_{int(time.time())}".replace("-", "_")
                pg_url = f"{pg}{'&' if '?' in pg else '?'}schema={schema}"

                def args(root: Path, sink: str = sink, pg_url: str = pg_url) -> list:
                    url = {
                        "file": f"file:{root / 'out'}",
                        "sqlite": f"sqlite:{root / 'eventflow.db'}",
                        "postgresql": pg_url,
                    }[sink]
                    return pipeline_workers(1, url)

                with stack(args) as s:
                    if sink == "file":
                        held = _count_lines(s.root / "out" / "job.result.jsonl")
                    elif sink == "sqlite":
                        held = _count_sqlite(s.root / "eventflow.db")
                    else:
                        held = _count_postgres(pg.split("?")[0], schema)
                    figures = await _drive(
                        s,
                        lines,
                        spec.jobs,
                        held,
                        _Server(server if sink == "postgresql" else None),
                        limit_s=limit_s,
                    )
                figures["sink"] = sink
                figures["workload"] = name
                results[f"{name}/{sink}"] = figures
    for name in workloads:
        file_rate = results.get(f"{name}/file", {}).get("events_per_min")
        for sink in sinks:
            r = results[f"{name}/{sink}"]
            if file_rate:
                r["share_of_file"] = round(int(r["events_per_min"]) / file_rate, 3)
    return results


def markdown(results: dict[str, dict[str, object]]) -> str:
    rows = [
        "| workload | sink | events | events/min | share of file sink | "
        "worker CPU s/1k | server CPU s/1k | database CPU s/1k | "
        "peak worker RSS MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results.values():
        share = r.get("share_of_file")
        rows.append(
            f"| {r['workload']} | {r['sink']} | {r['events']:,} | "
            f"{r['events_per_min']:,} | "
            f"{'' if share is None else f'{share:.0%}'} | "
            f"{r['worker_cpu_s_per_1k']} | {r['server_cpu_s_per_1k']} | "
            f"{r['database_cpu_s_per_1k'] if r['sink'] == 'postgresql' else ''} | "
            f"{r['peak_worker_rss_mib']} |"
        )
    return "\n".join(rows)


def specs(quick: bool) -> dict[str, WorkloadSpec]:
    """The workloads, or small versions of them (2% of the jobs)."""
    if not quick:
        return SPECS
    return {
        name: replace(spec, jobs=max(20, spec.jobs // 50), open_jobs=20)
        for name, spec in SPECS.items()
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m script.bench --sinks", description=__doc__
    )
    p.add_argument("--sinks", action="store_true", help="this benchmark")
    p.add_argument("--quick", action="store_true", help="2%% of the jobs")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--out", type=Path, help="also write the JSON results here")
    p.add_argument(
        "--markdown", action="store_true", help="print a Markdown table to stderr"
    )
    p.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL to write to (one new schema per run) instead of a "
        "private server started for the run",
    )
    p.add_argument(
        "--only",
        type=lambda s: tuple(s.split(",")),
        default=SINKS,
        help="comma-separated subset of " + ", ".join(SINKS),
    )
    return p.parse_args(argv)


def cli(argv: list[str] | None = None) -> None:
    """The command line: ``python -m script.bench --sinks``."""
    args = parse_args(argv)
    configure_logging("warning")
    result = asyncio.run(
        run_sinks(specs(args.quick), sinks=args.only, postgres=args.postgres)
    )
    report(result, args, markdown)
    exit_now(0)
