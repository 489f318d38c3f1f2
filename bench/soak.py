"""The soak: ``python -m script.soak`` (``make soak``: 30 minutes of trickle
at 20,000 events/min; ``make test`` runs a 2-minute version).

The trickle workload (``wire.trickle``: Poisson job arrivals, each job's
events spread over 20-30 s, 2% stragglers amending a timed-out version)
through the real pipeline on one fresh stack, with a linger short enough that
jobs close within the run. Every ``--sample`` seconds (a minute by default)
it samples the workers' RSS, each proxy's history length (its current run),
the history length of the running jobs (up to 50 of them, their largest and
mean), the number of running jobs, and the dev server's database size
(``temporal.db`` with its WAL). At the end it audits the file sink exactly:
every job has exactly one result per version (nothing doubled), the
results of each job cover every event it sent (nothing lost: results still
on their way when the sending ends are waited for, up to ten minutes) or the
events they miss are dead-lettered as too late (reached their job after its
linger closed it: counted apart, as ``late_jobs``), each straggler job ends
amended. RSS growth is measured from the first sample after the
warm-up (a fifth of the run, at least one job window) to the last one, and
as a trend: a least-squares line through every sample after the warm-up,
its rise over that span as a share of where it starts (one spiky sample at
either end moves the first figure, not the second).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import psutil
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from actors import names, routing
from actors.activities import TOO_LATE
from bench.run import (
    SHARDS,
    Stack,
    pipeline_workers,
    report,
    running,
    stack,
    wait_closed,
)
from bench.trickle import TrickleRun, drive_trickle, result_line
from ingress.sender import EventSender
from runtime.cli import configure_logging, exit_now
from wire import DATA_CONVERTER
from wire.trickle import TrickleJob, build

JOB_SAMPLE = 50


async def _history_length(client: Client, workflow_id: str) -> int | None:
    """The history length of the workflow's current run; None when it has
    none (not started yet, or closed and gone)."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return described.raw_description.workflow_execution_info.history_length


RUNNING_JOBS = running(names.JOB)


# glibc gives each thread arena a 64 MiB-aligned reservation of at most
# 64 MiB (HEAP_MAX_SIZE on 64-bit): how its mappings are told from the rest.
_ARENA = 64 << 20
_REGIONS = ("heap", "arenas", "anon", "files")  # what the table and chart show


def memory_regions(maps: Iterable[Any]) -> dict[str, int]:
    """A process's resident bytes by where they live, from its mappings
    (``psutil.Process.memory_maps(grouped=False)``): ``heap`` (glibc's main
    arena, grown with brk: what the event loop's thread mallocs, Python's
    blocks above 512 bytes among it), ``arenas`` (glibc's thread arenas:
    what other threads malloc, the SDK's Rust threads and the thread pool
    the sinks write from), ``anon`` (every other anonymous mapping: Python's
    small-object arenas, blocks above glibc's mmap threshold), ``files``
    (mapped files: code and libraries) and ``stack``."""
    out = dict.fromkeys(("heap", "arenas", "anon", "files", "stack"), 0)
    for m in maps:
        if m.path == "[heap]":
            out["heap"] += m.rss
        elif m.path.startswith("[stack"):
            out["stack"] += m.rss
        elif m.path.startswith("/"):
            out["files"] += m.rss
        elif m.path in ("", "[anon]"):
            out["arenas" if thread_arena(m.addr) else "anon"] += m.rss
    return out


def thread_arena(addr: str) -> bool:
    """Whether an anonymous mapping (``lo-hi`` in hex) is a glibc thread
    arena's: it starts at a 64 MiB boundary and is at most 64 MiB."""
    lo, hi = (int(x, 16) for x in addr.split("-"))
    return lo % _ARENA == 0 and hi - lo <= _ARENA


def _worker_memory(s: Stack) -> tuple[int, dict[str, int]]:
    rss = 0
    regions: dict[str, int] = {}
    for worker in s.workers:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            p = psutil.Process(worker.pid)
            rss += p.memory_info().rss
            for k, v in memory_regions(p.memory_maps(grouped=False)).items():
                regions[k] = regions.get(k, 0) + v
    return rss, regions


async def sample(s: Stack, client: Client, t: float) -> dict[str, object]:
    """One sample of what could grow: memory, histories, the database."""
    rss, regions = _worker_memory(s)
    proxies = await asyncio.gather(
        *(_history_length(client, routing.proxy_id(n)) for n in range(SHARDS))
    )
    running = (await client.count_workflows(RUNNING_JOBS)).count
    ids = [e.id async for e in client.list_workflows(RUNNING_JOBS, limit=JOB_SAMPLE)]
    jobs = [
        n
        for n in await asyncio.gather(*(_history_length(client, i) for i in ids))
        if n is not None
    ]
    db = sum(
        p.stat().st_size
        for p in s.root.glob("temporal.db*")
        if p.is_file()  # the database, its -wal and -shm
    )
    return {
        "t": round(t, 1),
        "worker_rss_mib": round(rss / 2**20, 1),
        "worker_memory_mib": {k: round(v / 2**20, 1) for k, v in regions.items()},
        "proxy_history_length": [n for n in proxies if n is not None],
        "running_jobs": running,
        "job_history_length_max": max(jobs, default=0),
        "job_history_length_mean": round(sum(jobs) / len(jobs), 1) if jobs else 0,
        "database_mib": round(db / 2**20, 1),
    }


class _LateLine(msgspec.Struct):
    """What the audit reads of a ``dead_letter`` line."""

    reason: str
    event_id: str | None = None
    tenant_id: str | None = None
    job_id: str | None = None


_late_line = msgspec.json.Decoder(_LateLine)


def late_events(path: Path) -> dict[str, set[str]]:
    """Per job key, the ids of its events dead-lettered as too late (their
    job had closed when they reached it), from the sink's dead letters."""
    late: dict[str, set[str]] = {}
    if not path.exists():
        return late
    for line in path.read_bytes().splitlines():
        d = _late_line.decode(line)
        if d.reason == TOO_LATE and d.event_id is not None:
            late.setdefault(f"{d.tenant_id}/{d.job_id}", set()).add(d.event_id)
    return late


def audit(path: Path, jobs: list[TrickleJob]) -> dict[str, object]:
    """Exactly once: one result per job and version, covering its events.

    A job whose results do not cover all its events is either accounted for
    by dead letters (events that reached it after it closed, dead-lettered
    as too late: ``late_jobs``) or lost (``lost_jobs``: neither).
    """
    results = [result_line.decode(line) for line in path.read_bytes().splitlines()]
    late = late_events(path.with_name("dead_letter.jsonl"))
    versions = Counter((r.tenant_id, r.job_id, r.version) for r in results)
    ids = Counter(r.result_id for r in results)
    covered: dict[str, int] = {}
    amended: set[str] = set()
    for r in results:
        key = f"{r.tenant_id}/{r.job_id}"
        covered[key] = max(covered.get(key, 0), r.events)
        if r.status == "amended":
            amended.add(key)
    short = [j for j in jobs if covered.get(j.key, 0) < j.events]
    lost = [
        j.key
        for j in short
        if covered.get(j.key, 0) + len(late.get(j.key, ())) < j.events
    ]
    gone = set(lost)
    late_jobs = [j.key for j in short if j.key not in gone]
    stragglers = [j.key for j in jobs if j.straggler_at_s is not None]
    return {
        "jobs": len(jobs),
        "results": len(results),
        "events_expected": sum(j.events for j in jobs),
        "events_covered": sum(min(covered.get(j.key, 0), j.events) for j in jobs),
        "lost_jobs": len(lost),
        # Not lost: their missing events are dead-lettered as too late.
        "late_jobs": len(late_jobs),
        "events_dead_lettered_late": sum(len(v) for v in late.values()),
        "late_examples": late_jobs[:5],
        "doubled_results": sum(n - 1 for n in versions.values() if n > 1)
        + sum(n - 1 for n in ids.values() if n > 1),
        "stragglers": len(stragglers),
        "stragglers_amended": sum(k in amended for k in stragglers),
        "lost_examples": lost[:5],
    }


def _after(samples: list[dict[str, object]], warm_s: float) -> list[dict[str, object]]:
    """The samples taken at or after ``warm_s``: those the growth counts."""
    return [x for x in samples if float(x["t"]) >= warm_s]  # type: ignore[arg-type]


def growth(samples: list[dict[str, object]], warm_s: float) -> float | None:
    """RSS growth from the first sample at or after ``warm_s`` to the last."""
    warm = _after(samples, warm_s)
    if len(warm) < 2:
        return None
    first = float(warm[0]["worker_rss_mib"])  # type: ignore[arg-type]
    last = float(warm[-1]["worker_rss_mib"])  # type: ignore[arg-type]
    return round((last - first) / first, 3) if first else None


def trend(samples: list[dict[str, object]], warm_s: float) -> dict[str, float] | None:
    """The least-squares line through the worker's RSS after ``warm_s``:
    its slope in MiB/min and its rise over the span as a share of its value
    at the span's start."""
    warm = _after(samples, warm_s)
    if len(warm) < 3:
        return None
    t = [float(x["t"]) / 60 for x in warm]  # type: ignore[arg-type]
    rss = [float(x["worker_rss_mib"]) for x in warm]  # type: ignore[arg-type]
    if t[-1] == t[0]:
        return None
    slope, intercept = statistics.linear_regression(t, rss)
    start = slope * t[0] + intercept
    end = slope * t[-1] + intercept
    return {
        "mib_per_min": round(slope, 3),
        "from_mib": round(start, 1),
        "to_mib": round(end, 1),
        "growth": round((end - start) / start, 3) if start > 0 else float("nan"),
    }


async def soak(
    *,
    minutes: float,
    rate_per_min: float = 20_000,
    sample_s: float = 60.0,
    linger_s: float = 60.0,
    worker_args: tuple[str, ...] = (),
    settle_s: float = 600.0,
) -> dict[str, object]:
    """The soak at ``rate_per_min`` for ``minutes``; figures and samples."""
    run = replace(
        TrickleRun(),
        duration_s=minutes * 60,
        linger_s=linger_s,
        sample_s=10.0,
        worker_args=worker_args,
    )
    jobs, events = build(run.spec(rate_per_min, f"soak{int(time.time())}-"))
    linger = ["--job-linger", str(linger_s), *worker_args]
    with stack(
        lambda root: [
            [*a, *linger] for a in pipeline_workers(1, f"file:{root / 'out'}")
        ]
    ) as s:
        client = await Client.connect(s.address, data_converter=DATA_CONVERTER)
        sender = EventSender(client, shards=SHARDS)
        samples: list[dict[str, object]] = []
        t0 = time.monotonic()
        stop = asyncio.Event()

        async def sampling() -> None:
            samples.append(await sample(s, client, 0.0))
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), sample_s)
                samples.append(await sample(s, client, time.monotonic() - t0))

        sampler = asyncio.create_task(sampling())
        figures = await drive_trickle(s, sender, jobs, events, rate_per_min, run)
        # Results still on their way when the trickle stopped waiting: a job
        # is lost only if its results never cover its events.
        results = s.sink / "job.result.jsonl"
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            if not audit(results, jobs)["lost_jobs"]:
                break
            await asyncio.sleep(1.0)
        settled_s = time.monotonic() - t0
        # Until every job has closed, so that closes are in the cost: at once
        # for jobs that close on completion, after the linger for those kept
        # open (--keep-jobs-open) or waiting for a straggler.
        await wait_closed(client, names.JOB, linger_s + 5)
        stop.set()
        await sampler
        checked = audit(results, jobs)
        checked["all_covered_at_s"] = round(settled_s, 1)
    warm_s = max(run.window_s[1], minutes * 60 / 5)
    return {
        "minutes": minutes,
        "offered_events_per_min": rate_per_min,
        "trickle": {k: v for k, v in figures.items() if k != "backlog"},
        "audit": checked,
        "samples": samples,
        "rss_growth_after_warm_up": growth(samples, warm_s),
        "rss_trend_after_warm_up": trend(samples, warm_s),
        "warm_up_s": warm_s,
    }


def _trend_text(fit: object) -> str:
    if not isinstance(fit, dict):
        return "too few samples for a trend"
    return (
        f"{fit['growth']} by the fitted trend "
        f"({fit['from_mib']} to {fit['to_mib']} MiB, {fit['mib_per_min']} MiB/min)"
    )


def markdown(result: dict[str, object]) -> str:
    a = result["audit"]
    t = result["trickle"]
    assert isinstance(a, dict)
    assert isinstance(t, dict)
    rows = [
        f"Soak: {result['minutes']:g} min at {result['offered_events_per_min']:,.0f} "
        f"events/min offered; achieved {t['events_per_min']:,}/min, "
        f"p50/p95/p99 {t['p50_s']}/{t['p95_s']}/{t['p99_s']} s; "
        f"{a['jobs']:,} jobs, {a['events_expected']:,} events: "
        f"{a['lost_jobs']} lost, {a['doubled_results']} doubled, "
        f"{a['late_jobs']} with {a['events_dead_lettered_late']} events "
        "dead-lettered as too late "
        f"(all covered {a['all_covered_at_s']} s after the start); "
        f"{a['stragglers_amended']}/{a['stragglers']} stragglers amended; "
        f"worker RSS growth after warm-up: {result['rss_growth_after_warm_up']} "
        f"first to last, {_trend_text(result.get('rss_trend_after_warm_up'))}.",
        "",
        "| t s | worker RSS MiB | heap / arenas / anon / files MiB | "
        "proxy history length | running jobs | "
        "job history max / mean | database MiB |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: |",
    ]
    for x in result["samples"]:  # type: ignore[union-attr]
        m = x.get("worker_memory_mib", {})
        where = " / ".join(str(m.get(k, "")) for k in _REGIONS)
        rows.append(
            f"| {x['t']} | {x['worker_rss_mib']} | {where} | "
            f"{', '.join(map(str, x['proxy_history_length']))} | "
            f"{x['running_jobs']} | {x['job_history_length_max']} / "
            f"{x['job_history_length_mean']} | {x['database_mib']} |"
        )
    return "\n".join(rows)


def chart(result: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    assert isinstance(samples, list)
    t = [x["t"] / 60 for x in samples]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    (rss, proxies), (jobs, db) = axes
    rss.plot(t, [x["worker_rss_mib"] for x in samples], marker="o", label="RSS")
    for region in _REGIONS:
        rss.plot(
            t,
            [x.get("worker_memory_mib", {}).get(region) for x in samples],
            marker=".",
            label=region,
        )
    fit = result.get("rss_trend_after_warm_up")
    if isinstance(fit, dict):
        start = float(result["warm_up_s"]) / 60  # type: ignore[arg-type]
        warm = [x for x in t if x >= start]
        rss.plot(
            [warm[0], warm[-1]],
            [fit["from_mib"], fit["to_mib"]],
            linestyle="--",
            color="black",
            label=f"RSS trend, {fit['mib_per_min']} MiB/min",
        )
    rss.set_title("worker RSS and where it lives (MiB)")
    # head room above the lines for the legend
    rss.set_ylim(0, 1.4 * max(x["worker_rss_mib"] for x in samples))
    rss.legend(fontsize="small", loc="upper left", ncol=3)
    for n in range(max(len(x["proxy_history_length"]) for x in samples)):
        proxies.plot(
            t,
            [
                x["proxy_history_length"][n]
                if n < len(x["proxy_history_length"])
                else None
                for x in samples
            ],
            marker=".",
            label=f"proxy/{n}",
        )
    proxies.set_title("proxy history length (current run)")
    proxies.legend(fontsize="small")
    jobs.plot(t, [x["job_history_length_max"] for x in samples], label="max")
    jobs.plot(t, [x["job_history_length_mean"] for x in samples], label="mean")
    jobs.set_title(f"running jobs' history length (up to {JOB_SAMPLE})")
    jobs.legend(fontsize="small")
    db.plot(t, [x["database_mib"] for x in samples], marker="o")
    db.set_title("dev server database (MiB)")
    for ax in (jobs, db):
        ax.set_xlabel("minutes")
    fig.suptitle(
        f"Soak: {result['minutes']:g} min at "
        f"{result['offered_events_per_min']:,.0f} events/min"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m script.soak", description=__doc__)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=20_000.0, help="events/min offered")
    p.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    p.add_argument("--linger", type=float, default=60.0, help="workers' --job-linger")
    p.add_argument(
        "--worker-args",
        type=lambda v: tuple(v.split()),
        default=(),
        help="more flags for the worker, e.g. --worker-args='--proxy-hold 30'",
    )
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--out", type=Path, help="also write the JSON results here")
    p.add_argument("--chart", type=Path, help="write the PNG chart here")
    p.add_argument("--markdown", action="store_true", help="a table to stderr")
    return p.parse_args(argv)


def cli() -> None:
    """The command line: ``python -m script.soak``; exits 1 when anything
    was lost or doubled."""
    args = parse_args()
    configure_logging("warning")
    result = asyncio.run(
        soak(
            minutes=args.minutes,
            rate_per_min=args.rate,
            sample_s=args.sample,
            linger_s=args.linger,
            worker_args=args.worker_args,
        )
    )
    report(result, args, markdown)
    if args.chart:
        chart(result, args.chart)
    a = result["audit"]
    assert isinstance(a, dict)
    exit_now(0 if a["lost_jobs"] == 0 and a["doubled_results"] == 0 else 1)
