"""Where a run's time goes: ``python -m script.profile``.

One trickle rate (``bench.trickle``'s workload, stack and driver) or one of
``bench.run``'s workloads (``--workload scatter``) through the real
pipeline, profiled over a window of its steady part:

* **the dev server**, from its own Prometheus metrics (``--metrics-port``)
  scraped at the window's start and end: persistence requests and their
  latency by operation, and API calls by operation, per 1,000 events the
  proxies acknowledged in the window. The CLI's dev server has one history
  shard on one SQLite connection, so the persistence seconds per wall
  second say how close that serial path is to full (requests waiting for
  the connection count in their latency, so it can pass 1);
* **the worker**, sampled by py-spy (``--gil``: only the thread holding the
  GIL, which is what a Python process's CPU is), stacks folded into each
  function's inclusive and self share of the samples. The SDK's Rust core
  runs outside the GIL and shows only in the process's CPU seconds.

The server's CPU is counted in the same window (``Stack.cpu``), so the
figures read as cost per 1,000 events beside the share each part takes.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.run import WORKLOADS, Stack, console, report, run_pipeline
from bench.trickle import TrickleRun, run_trickle
from ingress.sender import EventSender
from runtime.cli import configure_logging, exit_now

# Calls that wait by design (long polls): their time says nothing about
# cost, so they are counted apart and never timed. GetWorkflowExecutionHistory
# is both a long poll (a client waiting for a result) and a worker fetching
# a history it must replay (a workflow that left its cache): its count is an
# upper bound of those fetches, whose database cost is ReadHistoryBranch's.
LONG_POLLS = frozenset(
    {
        "PollWorkflowTaskQueue",
        "PollActivityTaskQueue",
        "PollNexusTaskQueue",
        "GetWorkflowExecutionHistory",
    }
)
TOP = 20


@dataclass(frozen=True, kw_only=True)
class Window:
    """When the profile is taken, in seconds from the first event sent."""

    start_s: float = 40.0
    seconds: float = 60.0
    rate_hz: int = 50


def py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is missing: install the dev group (uv sync)")
    return found


Sums = dict[tuple[str, str, str], float]


def server_sums(text: str) -> Sums:
    """(metric, service, operation) -> value for the sums and counts that
    the profile reads from one scrape."""
    wanted = {
        "persistence_latency_sum",
        "persistence_latency_count",
        "service_latency_sum",
        "service_latency_count",
    }
    out: Sums = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in wanted:
                continue
            key = (
                sample.name,
                sample.labels.get("service_name", ""),
                sample.labels.get("operation", ""),
            )
            out[key] = out.get(key, 0.0) + sample.value
    return out


async def scrape(port: int) -> Sums:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        response.raise_for_status()
        return server_sums(await response.text())


def server_table(
    before: Sums, after: Sums, *, prefix: str, per_1k: float, seconds: float
) -> list[dict[str, object]]:
    """Rows of one metric (``persistence_latency`` or ``service_latency``)
    by service and operation, dearest first."""
    rows = []
    for name, service, operation in after:
        if name != f"{prefix}_count" or operation in LONG_POLLS:
            continue
        count = after[(name, service, operation)] - before.get(
            (name, service, operation), 0.0
        )
        if count <= 0:
            continue
        key = (f"{prefix}_sum", service, operation)
        total = after.get(key, 0.0) - before.get(key, 0.0)
        rows.append(
            {
                "service": service,
                "operation": operation,
                "per_1k_events": round(count * per_1k, 1),
                "mean_ms": round(total / count * 1000, 2),
                "seconds_per_s": round(total / seconds, 3),
            }
        )
    rows.sort(key=lambda r: -float(r["seconds_per_s"]))  # type: ignore[arg-type]
    return rows


def long_polls(before: Sums, after: Sums, *, per_1k: float) -> dict[str, float]:
    """How many of each long poll the frontend answered, per 1,000 events."""
    counts: Counter[str] = Counter()
    for key, value in after.items():
        name, _, operation = key
        if name == "service_latency_count" and operation in LONG_POLLS:
            counts[operation] += value - before.get(key, 0.0)
    return {op: round(n * per_1k, 1) for op, n in sorted(counts.items()) if n > 0}


def fold(lines: Iterable[str]) -> dict[str, object]:
    """py-spy's raw output (``frame;frame;... count``, root first) into each
    function's inclusive and self share of the samples."""
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        # A frame is "function (file)"; the thread's name comes first.
        frames = [f for f in frames if "(" in f]
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            self_[frames[-1]] += n

    def top(c: Counter[str]) -> list[dict[str, object]]:
        return [
            {"function": f, "share": round(n / total, 3)} for f, n in c.most_common(TOP)
        ]

    return {
        "samples": total,
        "inclusive": top(inclusive) if total else [],
        "self": top(self_) if total else [],
    }


def _acked(sender: EventSender) -> int:
    summary = sender.summary
    return summary.accepted + summary.duplicates + summary.rejected


async def profile_window(
    s: Stack, sender: EventSender, window: Window
) -> dict[str, object]:
    """Runs beside a workload's driver: waits for the window, then profiles
    the server (metrics) and the first worker (py-spy) over it."""
    assert s.server_metrics_port is not None
    await asyncio.sleep(window.start_s)
    before, cpu0 = await scrape(s.server_metrics_port), s.cpu()
    acked0 = _acked(sender)
    t0 = time.monotonic()
    out = s.root / "py-spy.txt"
    spy = await asyncio.create_subprocess_exec(
        py_spy(),
        "record",
        "--pid",
        str(s.workers[0].pid),
        "--duration",
        str(int(window.seconds)),
        "--rate",
        str(window.rate_hz),
        "--format",
        "raw",
        "--gil",
        "--nolineno",
        "--nonblocking",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await spy.communicate()
    after, cpu1 = await scrape(s.server_metrics_port), s.cpu()
    seconds = time.monotonic() - t0
    events = _acked(sender) - acked0
    per_1k = 1000 / max(events, 1)
    worker: dict[str, object] = (
        fold(out.read_text().splitlines())
        if out.exists()
        else {"error": err.decode(errors="replace").strip()}
    )
    worker_cpu, server_cpu = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    worker["cpu_s_per_1k"] = round(worker_cpu * per_1k, 3)
    worker["cores"] = round(worker_cpu / seconds, 2)
    busy = worker.get("samples", 0)
    worker["gil_share"] = round(
        int(busy) / (window.rate_hz * seconds),  # type: ignore[call-overload]
        2,
    )
    return {
        "window_s": [window.start_s, round(window.start_s + seconds, 1)],
        "events_acknowledged": events,
        "server": {
            "cpu_s_per_1k": round(server_cpu * per_1k, 3),
            "cores": round(server_cpu / seconds, 2),
            "persistence": server_table(
                before,
                after,
                prefix="persistence_latency",
                per_1k=per_1k,
                seconds=seconds,
            ),
            "api": server_table(
                before, after, prefix="service_latency", per_1k=per_1k, seconds=seconds
            ),
            "long_polls_per_1k": long_polls(before, after, per_1k=per_1k),
        },
        "worker": worker,
    }


async def profile(
    rate_per_min: float, run: TrickleRun, window: Window
) -> dict[str, object]:
    """One trickle rate with the profile of ``window`` in its figures."""

    async def watch(s: Stack, sender: EventSender) -> dict[str, object]:
        return await profile_window(s, sender, window)

    figures = await run_trickle(rate_per_min, run, watch=watch)
    return {f"profile-trickle-{int(rate_per_min)}": figures}


async def profile_workload(
    name: str,
    window: Window,
    *,
    worker_args: Sequence[str] = (),
    server_args: Sequence[str] = (),
) -> dict[str, object]:
    """One of ``bench.run``'s workloads, sent as fast as the proxies take
    it, with the profile of ``window`` in its figures."""

    async def watch(s: Stack, sender: EventSender) -> dict[str, object]:
        return await profile_window(s, sender, window)

    figures = await run_pipeline(
        WORKLOADS[name],
        measure_history=False,
        count_actions=False,
        watch=watch,
        worker_args=worker_args,
        server_args=server_args,
    )
    return {f"profile-{name}": figures}


def markdown(results: dict[str, object]) -> str:
    out = []
    for name, figures in results.items():
        p = figures["profile"]  # type: ignore[index]
        server, worker = p["server"], p["worker"]
        out.append(
            f"### {name}: {figures['events_per_min']:,} events/min, "  # type: ignore[index]
            f"p99 {figures['p99_s']} s; window {p['window_s'][0]}-"
            f"{p['window_s'][1]} s, {p['events_acknowledged']:,} events "
            "acknowledged in it\n"
        )
        out.append(
            f"server {server['cpu_s_per_1k']} CPU-s/1k events "
            f"({server['cores']} cores); worker {worker['cpu_s_per_1k']} CPU-s/1k "
            f"({worker['cores']} cores, GIL held in {worker.get('gil_share')} "
            "of the samples)\n"
        )
        for title, rows in (
            ("persistence", server["persistence"]),
            ("API", server["api"]),
        ):
            out.append(
                f"| {title}: service | operation | per 1k events | mean ms "
                "| seconds per s |\n| --- | --- | ---: | ---: | ---: |"
            )
            for r in rows[:TOP]:
                out.append(
                    f"| {r['service']} | {r['operation']} | {r['per_1k_events']} "
                    f"| {r['mean_ms']} | {r['seconds_per_s']} |"
                )
            out.append("")
        polls = server.get("long_polls_per_1k", {})
        if polls:
            out.append(
                "long polls per 1k events (counted, not timed): "
                + ", ".join(f"{n} `{op}`" for op, n in polls.items())
                + "\n"
            )
        for title in ("inclusive", "self"):
            out.append(f"| worker, {title} | share of GIL samples |\n| --- | ---: |")
            for r in worker.get(title, []):
                out.append(f"| `{r['function']}` | {r['share']:.1%} |")
            out.append("")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d, w = TrickleRun(), Window()
    p = argparse.ArgumentParser(prog="python -m script.profile", description=__doc__)
    p.add_argument(
        "--workload",
        choices=("trickle", *WORKLOADS),
        default="trickle",
        help="the trickle at --rate, or one of the bench's workloads (trickle)",
    )
    p.add_argument(
        "--rate",
        type=lambda v: tuple(float(x) for x in v.split(",")),
        default=(20_000.0,),
        help="comma-separated events/min offered, one run each (20000)",
    )
    p.add_argument(
        "--duration", type=float, default=120.0, help="seconds of sending (120)"
    )
    p.add_argument("--linger", type=float, help=f"workers' --job-linger ({d.linger_s})")
    p.add_argument("--start", type=float, default=w.start_s, help="window start, s")
    p.add_argument("--seconds", type=float, default=w.seconds, help="window length")
    p.add_argument("--hz", type=int, default=w.rate_hz, help="py-spy samples/s")
    p.add_argument(
        "--worker-args",
        type=lambda v: tuple(v.split()),
        help="more flags for the worker, e.g. --worker-args='--proxy-hold 30'",
    )
    p.add_argument(
        "--server-args",
        type=lambda v: tuple(v.split()),
        help="more script.devserver flags, e.g. --server-args="
        "'--dynamic-config-value history.hostLevelCacheMaxSize=32768'",
    )
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--out", help="also write the JSON results here")
    p.add_argument("--markdown", action="store_true", help="tables to stderr")
    args = p.parse_args(argv)
    if args.workload == "trickle" and args.start + args.seconds > args.duration:
        p.error("the window must end before the sending does (--duration)")
    return args


def cli() -> None:
    """The command line: ``python -m script.profile``."""
    args = parse_args()
    configure_logging("warning")
    run = replace(
        TrickleRun(),
        duration_s=args.duration,
        **({"linger_s": args.linger} if args.linger else {}),
        **({"worker_args": args.worker_args} if args.worker_args else {}),
        **({"server_args": args.server_args} if args.server_args else {}),
    )
    window = Window(start_s=args.start, seconds=args.seconds, rate_hz=args.hz)

    async def main() -> dict[str, object]:
        results: dict[str, object] = {}
        if args.workload != "trickle":
            console.log(f"[bold]profile: {args.workload}[/bold]")
            return await profile_workload(
                args.workload,
                window,
                worker_args=run.worker_args,
                server_args=run.server_args,
            )
        for rate in args.rate:
            console.log(f"[bold]profile: trickle at {rate:,.0f} events/min[/bold]")
            results |= await profile(rate, run, window)
        return results

    report(asyncio.run(main()), args, markdown)
    exit_now(0)
