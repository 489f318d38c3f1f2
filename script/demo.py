"""The main job end to end on the embedded defaults: ``make run``.

Starts the Temporal dev server (file-backed, under ./data/) with its web UI
and the codec server that shows the UI readable payloads, a worker for all
shards writing JSON Lines to ./data/out and tables to the SQLite database
./data/eventflow.db, sends a generated workload through ``script.emit``, waits
for every job's result, prints what was produced and where, and a query of the
tables, then stops what it started. With TEMPORAL_ADDRESS set it uses that
server instead of starting one.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec

from actors.models import EXAMPLE as EXAMPLE_MODEL
from runtime.cli import positive_int
from runtime.codec import DEFAULT_PORT as DEFAULT_CODEC_PORT

DATA = Path("data")


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"nothing listens on {host}:{port} after {timeout:.0f} s")


# The model tables the demo's worker writes (job_parts and the example).
TABLES = ("job_parts", "detections")


def results_of_run(out: Path, run: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for kind in ("job.result", "dead_letter", "tenant.summary", *TABLES):
        path = out / f"{kind}.jsonl"
        if not path.exists():
            continue
        for line in path.read_bytes().splitlines():
            record = msgspec.json.decode(line)
            mine = record.get("job_id") or record.get("raw") or ""
            if run in mine or kind == "tenant.summary":
                counts[kind] += 1
                if record.get("source") == "model":
                    counts["model dead letters"] += 1
    return counts


# What a user would ask the tables first (README, "Results as tables").
STATUS_QUERY = """
SELECT status, count(*) FROM jobs_current WHERE job_id LIKE ? || '%'
GROUP BY status ORDER BY count(*) DESC
"""
DETECTIONS_QUERY = """
SELECT tenant_id, job_id, label, round(score, 3), box FROM detections_current
WHERE job_id LIKE ? || '%' ORDER BY score DESC, job_id LIMIT 5
"""


def show_tables(db: Path, run: str) -> None:
    """This run's results by status, and its best detections, from SQLite."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        statuses = conn.execute(STATUS_QUERY, (f"job-{run}",)).fetchall()
        detections = conn.execute(DETECTIONS_QUERY, (f"job-{run}",)).fetchall()
    print(f"\nfrom the tables in {db} (sqlite3 {db}):")
    print("  jobs_current of this run, by status:")
    for status, count in statuses:
        print(f"    {status:12}{count:6}")
    print("  detections_current, this run's five best scores:")
    for tenant, job, label, score, box in detections:
        print(f"    {tenant}/{job}  {label:10} {score:<6} {box}")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m script.demo", description=__doc__)
    p.add_argument("--jobs", type=positive_int, default=1000)
    p.add_argument("--tenants", type=positive_int, default=20)
    p.add_argument("--port", type=int, default=7233)
    p.add_argument(
        "--codec-port",
        type=int,
        default=DEFAULT_CODEC_PORT,
        help="port of the codec server the web UI decodes payloads through",
    )
    p.add_argument("--out", type=Path, default=DATA / "out")
    p.add_argument("--db", type=Path, default=DATA / "eventflow.db")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args()

    run = time.strftime("%H%M%S-")
    env = dict(os.environ)
    started: list[subprocess.Popen[bytes]] = []
    DATA.mkdir(exist_ok=True)
    logs = (DATA / "logs").resolve()
    logs.mkdir(exist_ok=True)
    try:
        if "TEMPORAL_ADDRESS" not in env:
            env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{args.port}"
            print(
                f"starting the Temporal dev server on 127.0.0.1:{args.port} "
                f"(state in {DATA / 'temporal.db'}; web UI on "
                f"http://localhost:{args.port + 1000}, payloads decoded by the "
                f"codec server on 127.0.0.1:{args.codec_port})"
            )
            started.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "script.devserver",
                        "--port",
                        str(args.port),
                        "--ui-port",
                        str(args.port + 1000),
                        "--codec-port",
                        str(args.codec_port),
                    ],
                    stdout=(logs / "devserver.log").open("ab"),
                    stderr=subprocess.STDOUT,
                )
            )
            wait_for_port("127.0.0.1", args.port, 60)
        print(
            f"starting a worker for every shard, sinks file:{args.out} "
            f"and sqlite:{args.db}"
        )
        started.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "script.worker",
                    "--sink",
                    f"file:{args.out}",
                    "--sink",
                    f"sqlite:{args.db}",
                    "--summary-interval",
                    "5",
                    # The example model: one row per detected object, and a
                    # model dead letter for the workload's faulty scores.
                    "--model",
                    EXAMPLE_MODEL,
                ],
                env=env,
                stdout=(logs / "worker.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
        )
        print(
            f"sending {args.jobs} generated jobs across {args.tenants} tenants "
            "(5% redelivered, some results before job.opened, 1% invalid)"
        )
        t0 = time.monotonic()
        emitted = subprocess.run(
            [
                sys.executable,
                "-m",
                "script.emit",
                "--generate",
                "--json",
                "--jobs",
                str(args.jobs),
                "--tenants",
                str(args.tenants),
                "--duplicates",
                "0.05",
                "--early",
                "0.3",
                "--invalid",
                "0.01",
                "--run",
                run,
                "--seed",
                str(int(time.time())),
            ],
            env=env,
            check=True,
            stdout=subprocess.PIPE,
        )
        print(f"emitter: {emitted.stdout.decode().strip()}")
        deadline = time.monotonic() + args.timeout
        counts = results_of_run(args.out, run)
        while counts["job.result"] < args.jobs:
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out with {counts['job.result']} results")
            time.sleep(1)
            counts = results_of_run(args.out, run)
        elapsed = time.monotonic() - t0
        time.sleep(6)  # one more summary window
        counts = results_of_run(args.out, run)
        print(f"\ndone in {elapsed:.1f} s. Records of this run in {args.out}/:")
        for kind, what in (
            ("job.result", "results of this run"),
            ("dead_letter", "refused inputs of this run"),
            ("tenant.summary", "tenant rollups (all runs)"),
            ("job_parts", "rows: one per part received"),
            ("detections", "rows: one per detected object"),
        ):
            print(f"  {kind + '.jsonl':22}{counts[kind]:6} {what}")
        print(
            f"  of the dead letters, {counts['model dead letters']} are rows the "
            "detections model's tests refused (source model)"
        )
        show_tables(args.db, run)
        print(
            f"logs in {logs}/; the Temporal UI shows the workflows, payloads "
            "decoded, while it runs"
        )
    finally:
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
