"""The trickle benchmark: a Poisson stream of jobs at an offered rate.

``python -m script.trickle`` (alone) or ``python -m script.bench --trickle``
(beside the rest). Each rate runs on a fresh stack (``bench.run.stack``: a
file-backed dev server and the pipeline's workers, with a ``--job-linger``
short enough that jobs close within the run). The events of
``wire.trickle.build`` are sent with the project's ``EventSender`` at their
times; the sender's own lag counts, because analysis services emit when they
emit (an open system). Measured per rate:

* achieved events/min: events actually sent in the steady part of the run
  (after the first window, up to the duration);
* latency p50/p95/p99: from the scheduled send of the event that completes a
  job (its last required part) to its first ``job.result`` in the file sink;
  the stragglers' (a held-back part, after a timed-out version) separately,
  to the version that covers them;
* backlog every ``sample_s``: events due so far minus the events covered by
  results (each job's largest ``events`` so far), and jobs overdue (their
  completing event sent more than 5 s ago, no result yet);
* CPU: cores used by the workers, the dev server, this process (sender and
  tailer) and the whole machine (which includes anything else running).

**Growing backlog**: the least-squares slope of the backlog samples over the
last ``TREND_S`` (180) seconds of sending, or all of them after the first
window in a shorter run, exceeds ``GROWTH_SHARE`` (2%) of the offered
events/s: the system falls behind by more than 2% of what it is offered.
**Sustained**: p99 <= ``P99_LIMIT_S`` (5 s), no growing backlog, and every
job's results cover all its events within the drain time.

The search for the highest sustained rate doubles from ``start`` until a rate
is not sustained (or is cut at ``ceiling``), then bisects between the
highest sustained and the lowest failed rate until they are within
``resolution`` (x1.2) of each other. Every step is a fresh stack; rates
already measured with the same settings are reused.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace

import msgspec
import psutil
from temporalio.client import Client

from bench.run import (
    SHARDS,
    Stack,
    Watch,
    console,
    percentile,
    pipeline_workers,
    report,
    stack,
)
from ingress.sender import EventSender
from runtime.cli import configure_logging, exit_now
from wire import DATA_CONVERTER
from wire.trickle import TrickleEvent, TrickleJob, TrickleSpec, build

RATES = (5_000, 10_000, 20_000)  # events/minute offered in the fixed runs
P99_LIMIT_S = 5.0
GROWTH_SHARE = 0.02
TREND_S = 180.0
OVERDUE_S = 5.0


@dataclass(frozen=True, kw_only=True)
class TrickleRun:
    """How each rate is run: the same for every rate of one invocation."""

    # The first window warms up; the 180 s after it are the backlog's trend.
    duration_s: float = 210.0
    # The workers' --job-linger, short enough that jobs close within the run
    # (about 120 s after they start), and what the stragglers aim inside.
    linger_s: float = 90.0
    window_s: tuple[float, float] = (20.0, 30.0)
    grace_s: float = 10.0
    straggler_share: float = 0.02
    sample_s: float = 10.0
    drain_s: float = 120.0  # the longest wait for results after the last send
    processes: int = 1
    seed: int = 1
    # More flags for every worker (the levers: ``--proxy-hold 30``) and for
    # the dev server (``--dynamic-config-value KEY=VALUE``).
    worker_args: tuple[str, ...] = ()
    server_args: tuple[str, ...] = ()

    def spec(self, rate_per_min: float, run: str) -> TrickleSpec:
        return TrickleSpec(
            rate_per_min=rate_per_min,
            duration_s=self.duration_s,
            window_s=self.window_s,
            grace_s=self.grace_s,
            straggler_share=self.straggler_share,
            linger_s=self.linger_s,
            seed=self.seed,
            run=run,
        )


# Tiny, for CI: two rates of 20 s, short windows, a 10 s linger so that
# stragglers and closes happen inside the run.
QUICK = TrickleRun(
    duration_s=20.0,
    linger_s=10.0,
    window_s=(3.0, 6.0),
    grace_s=2.0,
    straggler_share=0.1,
    sample_s=2.0,
    drain_s=60.0,
)
QUICK_RATES = (2_000, 4_000)


class ResultLine(msgspec.Struct):
    """What the trickle and the soak read of a ``job.result`` line."""

    result_id: str
    tenant_id: str
    job_id: str
    version: int
    events: int
    status: str


result_line = msgspec.json.Decoder(ResultLine)


@dataclass
class _Seen:
    """What the sink holds of one job so far."""

    first_at: float
    covered: int = 0
    covered_at: float = 0.0  # when ``covered`` was reached
    amended: bool = False


class ResultTail:
    """Follows ``job.result.jsonl``: when each job's results appear, and how
    many of its events they cover."""

    def __init__(self, path: os.PathLike[str] | str, *, expected: int) -> None:
        self._path = path
        self._expected = expected
        # Set once results cover every event sent.
        self.complete = asyncio.Event()
        self._offset = 0
        self._buffer = b""
        self.jobs: dict[str, _Seen] = {}
        self.covered = 0  # the sum of every job's largest ``events``

    def poll(self) -> None:
        try:
            with open(self._path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        if not chunk:
            return
        now = time.monotonic()
        self._offset += len(chunk)
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        for line in lines:
            r = result_line.decode(line)
            seen = self.jobs.setdefault(f"{r.tenant_id}/{r.job_id}", _Seen(now))
            if r.events > seen.covered:
                self.covered += r.events - seen.covered
                seen.covered, seen.covered_at = r.events, now
            seen.amended |= r.status == "amended"
        if self.covered >= self._expected:
            self.complete.set()

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.poll()
            await asyncio.sleep(0.02)


def _cpu_busy() -> float:
    """Busy CPU seconds of the whole machine so far (every process)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(x, y)`` points; None for fewer than three."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else None


def trend(
    samples: list[dict[str, float]], rate_per_min: float, run: TrickleRun
) -> dict[str, object]:
    """Is the backlog growing over the last ``TREND_S`` of sending?"""
    end = run.duration_s
    start = max(run.window_s[1], end - TREND_S)
    points = [(s["t"], s["backlog"]) for s in samples if start <= s["t"] <= end]
    per_s = slope(points)
    limit = GROWTH_SHARE * rate_per_min / 60
    return {
        "trend_window_s": round(end - start, 1),
        "backlog_slope_per_s": None if per_s is None else round(per_s, 2),
        "growth_limit_per_s": round(limit, 2),
        "growing": None if per_s is None else per_s > limit,
    }


async def run_trickle(
    rate_per_min: float,
    run: TrickleRun,
    *,
    watch: Watch | None = None,
) -> dict[str, object]:
    """One rate through the real pipeline on a fresh stack. ``watch`` runs
    beside the driver (with the server's metrics on); what it returns is the
    figures' ``profile``."""
    tag = f"r{int(rate_per_min)}-"
    jobs, events = build(run.spec(rate_per_min, tag))
    linger = ["--job-linger", str(run.linger_s), *run.worker_args]
    with stack(
        lambda root: [
            [*args, *linger]
            for args in pipeline_workers(run.processes, f"file:{root / 'out'}")
        ],
        server_metrics=watch is not None,
        server_args=run.server_args,
    ) as s:
        client = await Client.connect(s.address, data_converter=DATA_CONVERTER)
        sender = EventSender(client, shards=SHARDS)
        watching = None if watch is None else asyncio.create_task(watch(s, sender))
        figures = await drive_trickle(s, sender, jobs, events, rate_per_min, run)
        if watching is not None:
            figures["profile"] = await watching
    figures["offered_events_per_min"] = rate_per_min
    return figures


async def drive_trickle(
    s: Stack,
    sender: EventSender,
    jobs: list[TrickleJob],
    events: list[TrickleEvent],
    rate_per_min: float,
    run: TrickleRun,
) -> dict[str, object]:
    times = [e.send_at_s for e in events]
    tail = ResultTail(s.sink / "job.result.jsonl", expected=len(events))
    stop = asyncio.Event()
    samples: list[dict[str, float]] = []
    pending = sorted(
        (j.completes_at_s, j.key) for j in jobs if j.straggler_at_s is None
    )
    me = psutil.Process()
    cpu0, me0, busy0 = s.cpu(), me.cpu_times(), _cpu_busy()
    load0 = os.getloadavg()
    t0 = time.monotonic()

    async def sample() -> None:
        while not stop.is_set():
            await asyncio.sleep(run.sample_s)
            tail.poll()
            t = time.monotonic() - t0
            due = bisect.bisect_right(times, t)
            late = bisect.bisect_right(pending, (t - OVERDUE_S, "\uffff"))
            overdue = sum(1 for _, k in pending[:late] if k not in tail.jobs)
            samples.append(
                {
                    "t": round(t, 1),
                    "due": due,
                    "covered": tail.covered,
                    "backlog": due - tail.covered,
                    "overdue_jobs": overdue,
                }
            )
            s.sample_rss()

    tasks = [asyncio.create_task(tail.follow(stop)), asyncio.create_task(sample())]
    warm, end = run.window_s[1], run.duration_s
    steady = 0
    for event in events:
        ahead = t0 + event.send_at_s - time.monotonic()
        if ahead > 0.002:
            await asyncio.sleep(ahead)
        await sender.send(event.line)
        if warm <= time.monotonic() - t0 < end:
            steady += 1
    await sender.flush()
    send_s = time.monotonic() - t0
    lag_s = send_s - times[-1]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tail.complete.wait(), run.drain_s)
    stop.set()
    await asyncio.gather(*tasks)
    tail.poll()
    elapsed = time.monotonic() - t0
    cpu1, me1, busy1 = s.cpu(), me.cpu_times(), _cpu_busy()

    on_time, late = [], []
    unresolved = amended = 0
    for job in jobs:
        seen = tail.jobs.get(job.key)
        if seen is None or seen.covered < job.events:
            unresolved += 1
            continue
        if job.straggler_at_s is None:
            on_time.append(seen.first_at - (t0 + job.completes_at_s))
        else:
            late.append(seen.covered_at - (t0 + job.straggler_at_s))
            amended += seen.amended

    def share(seconds: float) -> float:
        return round(seconds / elapsed, 2)

    figures: dict[str, object] = {
        "events": len(events),
        "jobs": len(jobs),
        "results": len(jobs) - unresolved,
        "unresolved_jobs": unresolved,
        "stragglers": sum(j.straggler_at_s is not None for j in jobs),
        "amended": amended,
        "seconds": round(elapsed, 2),
        "duration_s": run.duration_s,
        "send_lag_s": round(lag_s, 2),
        # ``events_per_min`` is what bench.run.markdown shows: the achieved rate.
        "events_per_min": round(steady / (end - warm) * 60),
        "p50_s": round(percentile(on_time, 0.50), 3),
        "p95_s": round(percentile(on_time, 0.95), 3),
        "p99_s": round(percentile(on_time, 0.99), 3),
        "straggler_p50_s": round(percentile(late, 0.50), 3),
        "straggler_max_s": round(max(late), 3) if late else None,
        "worker_cpu_s_per_1k": round((cpu1[0] - cpu0[0]) / len(events) * 1000, 3),
        "server_cpu_s_per_1k": round((cpu1[1] - cpu0[1]) / len(events) * 1000, 3),
        "peak_worker_rss_mib": round(s.peak_rss / 2**20, 1),
        "cpu_cores": {
            "workers": share(cpu1[0] - cpu0[0]),
            "server": share(cpu1[1] - cpu0[1]),
            "bench": share(
                me1.user + me1.system - me0.user - me0.system  # sender, tailer
            ),
            "machine": share(busy1 - busy0),
            "of": psutil.cpu_count(),
        },
        "load_average": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
        "backlog": samples,
    }
    figures.update(trend(samples, rate_per_min, run))
    figures["sustained"] = sustained(figures)
    return figures


def sustained(figures: dict[str, object]) -> bool:
    """p99 within the limit, no growing backlog, every job resolved."""
    p99 = figures["p99_s"]
    return (
        figures["unresolved_jobs"] == 0
        and figures["growing"] is False
        and isinstance(p99, float)
        and p99 <= P99_LIMIT_S
    )


async def search(
    measure: Callable[[float], Awaitable[dict[str, object]]],
    *,
    start: float = 5_000,
    ceiling: float = 160_000,
    floor: float = 500,
    resolution: float = 1.2,
    max_steps: int = 10,
) -> dict[str, object]:
    """The highest sustained offered rate: double, then bisect."""
    lo: float | None = None
    hi: float | None = None
    steps: list[dict[str, object]] = []
    rate = start
    for _ in range(max_steps):
        figures = await measure(rate)
        ok = bool(figures["sustained"])
        steps.append(
            {
                "rate_per_min": rate,
                "sustained": ok,
                "p99_s": figures["p99_s"],
                "backlog_slope_per_s": figures["backlog_slope_per_s"],
                "unresolved_jobs": figures["unresolved_jobs"],
            }
        )
        if ok:
            lo = rate
        else:
            hi = rate
        if lo is not None and hi is not None:
            if hi / lo <= resolution:
                break
            rate = round((lo + hi) / 2 / 250) * 250
        elif hi is None:
            if rate * 2 > ceiling:
                break
            rate *= 2
        else:
            if rate / 2 < floor:
                break
            rate /= 2
    return {
        "highest_sustained_per_min": lo,
        "lowest_failed_per_min": hi,
        "rule": f"p99 <= {P99_LIMIT_S} s, backlog slope <= {GROWTH_SHARE:.0%} "
        "of the offered rate, every job resolved",
        "steps": steps,
    }


async def trickle_bench(
    *,
    quick: bool = False,
    rates: tuple[float, ...] | None = None,
    run: TrickleRun | None = None,
    search_from: float | None = None,
    do_search: bool = True,
) -> dict[str, object]:
    """The fixed rates, then the search (reusing them): one result entry
    per rate (``trickle-{rate}``) and ``trickle-search``."""
    run = run or (QUICK if quick else TrickleRun())
    rates = rates or (QUICK_RATES if quick else RATES)
    measured: dict[float, dict[str, object]] = {}

    async def measure(rate: float) -> dict[str, object]:
        if rate not in measured:
            console.log(f"[bold]trickle: {rate:,.0f} events/min offered[/bold]")
            measured[rate] = await run_trickle(rate, run)
            f = measured[rate]
            console.log(
                {k: f[k] for k in ("events_per_min", "p50_s", "p99_s", "sustained")}
                | {"slope": f["backlog_slope_per_s"], "cpu": f["cpu_cores"]}
            )
        return measured[rate]

    for rate in rates:
        await measure(rate)
    results: dict[str, object] = {
        "trickle-settings": {
            **asdict(run),
            "p99_limit_s": P99_LIMIT_S,
            "growth_share": GROWTH_SHARE,
        }
    }
    if do_search:
        # Quick: only the rates already measured, so CI pays for no more runs.
        bounds = {"floor": min(rates), "ceiling": max(rates)} if quick else {}
        results["trickle-search"] = await search(
            measure,
            start=search_from or rates[0],
            max_steps=len(rates) if quick else 10,
            **bounds,
        )
    for rate in sorted(measured):
        results[f"trickle-{int(rate)}"] = measured[rate]
    return results


def markdown(results: dict[str, object]) -> str:
    """The trickle's own table: what ``bench.run.markdown`` does not show."""
    rows = [
        "| offered events/min | achieved events/min | jobs | p50 s | p95 s | "
        "p99 s | stragglers amended | straggler p50 s | backlog slope events/s "
        "(limit) | growing | sustained | cores: workers / server / bench / "
        "machine |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | "
        "--- | --- |",
    ]
    for name, r in results.items():
        if not name.startswith("trickle-") or not isinstance(r, dict):
            continue
        if "offered_events_per_min" not in r:
            continue
        c = r["cpu_cores"]
        rows.append(
            f"| {r['offered_events_per_min']:,.0f} | {r['events_per_min']:,} | "
            f"{r['jobs']:,} | {r['p50_s']} | {r['p95_s']} | {r['p99_s']} | "
            f"{r['amended']}/{r['stragglers']} | {r['straggler_p50_s']} | "
            f"{r['backlog_slope_per_s']} ({r['growth_limit_per_s']}) | "
            f"{r['growing']} | {r['sustained']} | {c['workers']} / {c['server']} / "
            f"{c['bench']} / {c['machine']} of {c['of']} |"
        )
    found = results.get("trickle-search")
    if isinstance(found, dict):
        steps = ", ".join(
            f"{s['rate_per_min']:,.0f} {'ok' if s['sustained'] else 'no'}"
            for s in found["steps"]
        )
        high = found["highest_sustained_per_min"]
        rows += [
            "",
            f"Highest sustained offered rate: "
            f"{'none tried' if high is None else f'{high:,.0f}'} events/min "
            f"({found['rule']}; steps: {steps}).",
        ]
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = TrickleRun()
    p = argparse.ArgumentParser(prog="python -m script.trickle", description=__doc__)
    p.add_argument("--quick", action="store_true", help="two 20 s rates, for CI")
    p.add_argument(
        "--rates",
        type=lambda v: tuple(float(x) for x in v.split(",")),
        help="comma-separated events/min (default "
        + ",".join(str(r) for r in RATES)
        + ")",
    )
    p.add_argument("--duration", type=float, help=f"seconds per rate ({d.duration_s})")
    p.add_argument("--linger", type=float, help=f"workers' --job-linger ({d.linger_s})")
    p.add_argument("--processes", type=int, help="worker processes (1)")
    p.add_argument("--seed", type=int, help="the workload's seed (1)")
    p.add_argument(
        "--worker-args",
        type=lambda v: tuple(v.split()),
        help="more flags for every worker, e.g. --worker-args='--proxy-hold 30'",
    )
    p.add_argument("--search-from", type=float, help="the search's first rate")
    p.add_argument("--no-search", action="store_true", help="the fixed rates only")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--out", help="also write the JSON results here")
    p.add_argument("--markdown", action="store_true", help="tables to stderr")
    return p.parse_args(argv)


def run_from(args: argparse.Namespace) -> TrickleRun:
    run = QUICK if args.quick else TrickleRun()
    changes = {
        "duration_s": args.duration,
        "linger_s": args.linger,
        "processes": args.processes,
        "seed": args.seed,
        "worker_args": args.worker_args,
    }
    return replace(run, **{k: v for k, v in changes.items() if v is not None})


def cli() -> None:
    """The command line: ``python -m script.trickle``."""
    args = parse_args()
    configure_logging("warning")
    result = asyncio.run(
        trickle_bench(
            quick=args.quick,
            rates=args.rates,
            run=run_from(args),
            search_from=args.search_from,
            do_search=not args.no_search,
        )
    )
    report(result, args, markdown)
    exit_now(0)
