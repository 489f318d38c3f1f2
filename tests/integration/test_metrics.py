"""Prometheus metrics of a real worker and a real ingress, scraped during a
run: the proxies' counts equal what the senders were told, the records
written equal what the sink holds, the ingress counts its requests, and the
SDK's own metrics are served on the same endpoint."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import free_port
from tests.support.processes import run_script
from tests.support.records import file_progress, file_records
from tests.support.temporal import address_of
from wire.synthetic import WorkloadSpec, generate

SHARDS = 2


async def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of ``GET /metrics``, keyed by name and labels."""
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def test_metrics_match_what_senders_were_told_and_what_the_sink_holds(
    temporal, worker_process, ingress_process, tmp_path: Path
) -> None:
    address = address_of(temporal)
    out = tmp_path / "out"
    worker_port, ingress_port = free_port(), free_port()
    worker_process(
        address,
        [
            *("--shards", str(SHARDS), "--sink", f"file:{out}"),
            *("--summary-interval", "1", "--metrics-port", str(worker_port)),
        ],
    )
    ingress = ingress_process(
        address, ["--shards", str(SHARDS), "--metrics-port", str(ingress_port)]
    )
    spec = WorkloadSpec(
        tenants=3, jobs=20, types=2, parts=2, duplicates=0.1, invalid=0.05, seed=5
    )
    lines, expected = generate(spec)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    emitted = msgspec.json.decode(
        (
            await asyncio.to_thread(
                run_script,
                "script.emit",
                *("--file", str(events), "--shards", str(SHARDS), "--json"),
                address=address,
            )
        ).stdout
    )
    # Through the ingress: one job of two events, then one invalid event.
    job = [
        {"type": "job.opened", "event_id": "m-open", "tenant_id": "metered",
         "job_id": "m1", "required": ["detect"], "at": "2026-01-01T00:00:00Z"},
        {"type": "analysis.result", "event_id": "m-0", "tenant_id": "metered",
         "job_id": "m1", "analysis_type": "detect", "part": 0, "parts": 1,
         "payload": {"n": 1}, "at": "2026-01-01T00:00:01Z"},
    ]  # fmt: skip
    statuses = Counter()
    async with aiohttp.ClientSession(trust_env=False) as session:
        for body in [msgspec.json.encode(e) for e in job] + [b'{"type": "nope"}']:
            async with session.post(ingress.url + "/events", data=body) as response:
                statuses[response.status] += 1
    assert statuses == {200: 2, 400: 1}

    jobs = spec.jobs + 1
    deadline = asyncio.get_running_loop().time() + 120
    while asyncio.get_running_loop().time() < deadline:
        progress = await file_progress(out)
        if progress.results >= jobs and progress.jobs_completed >= jobs:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # the last summaries and rollup reports settle
    worker = await scrape(worker_port)
    front = await scrape(ingress_port)
    records = file_records(out)

    # Counted once, at the proxies: what the senders were told.
    assert total(worker, "eventflow_events_total", outcome="accepted") == (
        emitted["accepted"] + 2
    )
    assert (
        total(worker, "eventflow_events_total", outcome="duplicate")
        == (emitted["duplicates"])
    )
    assert total(worker, "eventflow_events_total", outcome="refused") == (
        emitted["rejected"] + 1
    )
    assert emitted["duplicates"] > 0
    assert emitted["rejected"] > 0
    # Every record the sink holds, once, by kind and status.
    held = Counter((r["type"], r.get("status", "")) for r in records)
    # The built-in job_parts model's rows: one per part received.
    parts = (out / "job_parts.jsonl").read_bytes().splitlines()
    assert len(parts) == spec.jobs * spec.types * spec.parts + 1
    held[("job_parts", "")] = len(parts)
    written = {
        (dict(ls)["kind"], dict(ls)["status"]): v
        for (n, ls), v in worker.items()
        if n == "eventflow_records_written_total"
    }
    assert written == {key: float(n) for key, n in held.items()}
    assert held[("job.result", "complete")] == jobs
    # What the proxies hold now, and the deliveries that emptied them.
    assert total(worker, "eventflow_proxy_held_events") == 0
    assert total(worker, "eventflow_delivery_seconds_count") > 0
    assert total(worker, "eventflow_deliveries_in_flight") == 0
    assert total(worker, "eventflow_sink_write_seconds_count", sink="file") > 0
    assert total(worker, "eventflow_sink_errors_total", sink="file") == 0
    # The SDK's own runtime metrics come on the same endpoint.
    assert any(name.startswith("temporal_") for name, _ in worker)
    # The ingress counts its requests by route and status.
    assert (
        total(front, "eventflow_ingress_requests_total", route="/events", status="200")
        == 2
    )
    assert (
        total(front, "eventflow_ingress_requests_total", route="/events", status="400")
        == 1
    )
    assert total(front, "eventflow_ingress_request_seconds_count", route="/events") == 3
    # And the sink holds what the workload says, plus the ingress's share.
    assert held[("dead_letter", "")] == expected.dead_letters + 1
