"""A sink's standalone write rate: ``python -m script.sink_write --sink URL``.

``--writers`` processes (worker-like: each its own sink over the same store)
write ``--batches`` batches of ``--batch`` distinct ``job.result`` records
each, at once, then write the same batches again (a retry: every record is
already held). Records are built and encoded before the clock starts; their
``analyses`` are the default pipeline's shape over synthetic payloads of about
``--payload-bytes`` each (``wire.synthetic.payload``).

With ``--rows job_parts`` the batches hold rows of the built-in ``job_parts``
model instead (one per part; the payload as its raw JSON), as the workers
write them beside each result.

It prints one JSON report on stdout: records per second for the first writes
and for the retries, over the wall time from the start signal to the last
writer's end, and each writer's own rate.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import sys
import time
from multiprocessing.synchronize import Barrier

import msgspec

from actors.models import JobPart, job_parts
from runtime.cli import configure_logging, positive_int
from sinks import SinkRecord, open_sink, redact_url
from wire.records import JobResult
from wire.synthetic import payload

_TYPES = ("detect", "caption", "ocr")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m script.sink_write", description=__doc__)
    p.add_argument("--sink", required=True, help="the sink URL (any open_sink takes)")
    p.add_argument("--writers", type=positive_int, default=4)
    p.add_argument("--batches", type=positive_int, default=20)
    p.add_argument("--batch", type=positive_int, default=500)
    p.add_argument("--payload-bytes", type=positive_int, default=400)
    p.add_argument(
        "--rows",
        choices=("job_parts",),
        default=None,
        help="write this model's rows instead of job.result records",
    )
    p.add_argument("--log-level", default="warning")
    return p.parse_args(argv)


def records(writer: int, batches: int, batch: int, size: int) -> list[SinkRecord]:
    """Writer ``writer``'s records: distinct jobs, 3 types x 2 parts each."""
    rng = random.Random(writer)
    made = []
    for n in range(batches * batch):
        job = f"w{writer}-job-{n}"
        analyses = {
            kind: {
                "parts": 2,
                "payloads": [
                    msgspec.json.decode(payload(rng, kind, size)) for _ in range(2)
                ],
            }
            for kind in _TYPES
        }
        made.append(
            SinkRecord.of(
                JobResult(
                    result_id=f"t{n % 10}/{job}/1",
                    tenant_id=f"t{n % 10}",
                    job_id=job,
                    version=1,
                    status="complete",
                    events=7,
                    analyses=analyses,
                    required=list(_TYPES),
                    missing={},
                    opened_at="2026-01-01T00:00:00+00:00",
                    completed_at="2026-01-01T00:00:05.250000+00:00",
                )
            )
        )
    return made


def part_rows(writer: int, batches: int, batch: int, size: int) -> list[SinkRecord]:
    """Writer ``writer``'s ``job_parts`` rows: 3 types x 2 parts per job."""
    rng = random.Random(writer)
    made = []
    for n in range(batches * batch):
        job, kind, part = f"w{writer}-job-{n // 6}", _TYPES[n % 6 // 2], n % 2
        system = {
            "result_id": f"t{n % 10}/{job}/1",
            "tenant_id": f"t{n % 10}",
            "job_id": job,
            "version": 1,
        }
        row = JobPart(
            analysis_type=kind,
            part=part,
            parts=2,
            event_id=f"{job}-{kind}-{part}",
            payload=msgspec.Raw(payload(rng, kind, size)),
        )
        record_id, body = job_parts.table.check(row, system)
        made.append(SinkRecord(job_parts.name, record_id, body))
    return made


async def _write(
    url: str, batches: list[list[SinkRecord]], start: Barrier, *, rows: bool
) -> dict:
    sink = open_sink(url, tables=[job_parts.table] if rows else ())
    try:
        await sink.prepare()
        # Tables created and a connection open before the clock starts.
        await sink.write(batches[0][:1])
        start.wait()
        began = time.monotonic()
        new = sum([await sink.write(b) for b in batches])
        first_s = time.monotonic() - began
        start.wait()
        began = time.monotonic()
        again = sum([await sink.write(b) for b in batches])
        retry_s = time.monotonic() - began
    finally:
        await sink.close()
    return {"new": new, "first_s": first_s, "again": again, "retry_s": retry_s}


def _writer(args: argparse.Namespace, writer: int, start: Barrier, out: object) -> None:
    configure_logging(args.log_level)
    build = part_rows if args.rows else records
    made = build(writer, args.batches, args.batch, args.payload_bytes)
    batches = [made[i : i + args.batch] for i in range(0, len(made), args.batch)]
    written = asyncio.run(_write(args.sink, batches, start, rows=bool(args.rows)))
    out.put(written)  # type: ignore[attr-defined]


def main(args: argparse.Namespace) -> dict[str, object]:
    context = multiprocessing.get_context("spawn")
    # The writers and this process: the clock starts when all are ready.
    start = context.Barrier(args.writers + 1)
    out = context.Queue()
    writers = [
        context.Process(target=_writer, args=(args, n, start, out))
        for n in range(args.writers)
    ]
    for process in writers:
        process.start()
    start.wait(timeout=600)
    began = time.monotonic()
    start.wait(timeout=600)  # every writer done with its first writes
    first_s = time.monotonic() - began
    began = time.monotonic()
    reports = [out.get(timeout=600) for _ in writers]
    retry_s = time.monotonic() - began
    for process in writers:
        process.join()
    total = args.writers * args.batches * args.batch
    # The one record each writer wrote before the clock started.
    new = sum(r["new"] for r in reports) + args.writers
    return {
        "sink": redact_url(args.sink),
        "kind": args.rows or "job.result",
        "writers": args.writers,
        "batch": args.batch,
        "records": total,
        "new": new,
        "records_per_s": round(total / first_s),
        "retry_records_per_s": round(total / retry_s),
        "retry_new": sum(r["again"] for r in reports),
        "per_writer_records_per_s": [
            round(args.batches * args.batch / r["first_s"]) for r in reports
        ],
        "ok": new == total and all(r["again"] == 0 for r in reports),
    }


def cli() -> None:
    """The command line: ``python -m script.sink_write``."""
    args = parse_args()
    result = main(args)
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    sys.exit(0 if result["ok"] else 1)
