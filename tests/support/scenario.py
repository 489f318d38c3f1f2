"""A small scenario that drives every workflow through every path: batches
through the proxies, jobs completing, timing out, closing, reopened by late
events (amended), refusing bad events, continuing-as-new, and a tenant
summary.

Used to record the committed histories (``python -m tests.replay.record``)
and by the integration and activity tests (``running_workers``: the workers
in the test's process, on the strict sandbox).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from temporalio.client import Client

from actors.models import load_models
from actors.pipelines import collected
from actors.rules.job import JobSettings
from actors.rules.tenant import TenantSettings
from actors.settings import WorkerConfig
from ingress.sender import EventSender
from runtime.retire import retire_proxy
from runtime.worker import build_workers
from sinks import FileSink, Sink, open_sink
from sinks.fanout import FanOutSink
from tests.support.events import opened, part
from tests.support.sinks import FailingSink

SHARDS = 2


@asynccontextmanager
async def running_workers(
    client: Client,
    out: Path,
    config: WorkerConfig,
    *,
    sink_url: str | None = None,
    lagging: bool = False,
) -> AsyncIterator[None]:
    """The workers of ``config`` (its models included) writing to ``out``, a
    file sink, or to the sink ``sink_url`` names. With ``lagging``, also to a
    second file sink (``out/lagging``) that fails its first two writes, so
    that what it missed reaches it through catch-up workflows."""
    models = load_models(config.models, job_parts=config.job_parts)
    tables = [m.table for m in models]
    sink: Sink = (
        FileSink(out, tables=tables)
        if sink_url is None
        else open_sink(sink_url, tables=tables)
    )
    if lagging:
        late = FailingSink(FileSink(out / "lagging", tables=tables), failures=2)
        sink = FanOutSink([sink, late], ["first", "lagging"])
    await sink.prepare()
    workers = build_workers(
        client,
        config=config,
        sink=sink,
        models=models,
        pipeline=collected,
        shards=range(config.shards),
        strict=True,  # the sandbox polices the workflow modules here
    )
    try:
        for worker in workers:
            await worker.__aenter__()
        yield
    finally:
        for worker in workers:
            await worker.__aexit__(None, None, None)
        await sink.close()


SCENARIO_CONFIG = WorkerConfig(
    shards=SHARDS,
    job=JobSettings(
        default_deadline_s=30, linger_s=4, continue_as_new_after=40, reopen=True
    ),
    tenant=TenantSettings(summary_interval_s=1, continue_as_new_after=12),
    proxy_continue_as_new_after=60,
    delivery_batch=5,
    rollup_interval_s=1,
)


async def run_scenario(client: Client) -> None:
    """Send the scenario's events in waves and wait for each wave to land."""
    sender = EventSender(client, shards=SHARDS, batch_size=4)
    first = [
        # complete, results before job.opened, a duplicate and a conflict
        part("acme", "j1", "detect", 0, 2),
        part("acme", "j1", "detect", 0, 2),
        opened("acme", "j1", ["detect", "caption"]),
        part("acme", "j1", "detect", 1, 2),
        part("acme", "j1", "caption", 0, 1),
        part("acme", "j1", "caption", 0, 1, eid="j1-conflict"),
        # times out after 1 s with a part missing, then is amended
        opened("acme", "j2", ["detect"], deadline_s=1),
        part("acme", "j2", "detect", 0, 2),
        # refused events: type not required, disagreeing parts, bad JSON
        opened("globex", "j3", ["ocr"]),
        part("globex", "j3", "embed", 0, 1),
        part("globex", "j3", "ocr", 0, 2),
        part("globex", "j3", "ocr", 1, 3, eid="j3-ocr-bad"),
        part("globex", "j3", "ocr", 1, 2),
        b'{"type": "analysis.result", "event_id": ',
    ]
    # many small jobs so proxies and tenants continue-as-new
    for n in range(12):
        first += [
            opened("globex", f"m{n}", ["ocr"]),
            part("globex", f"m{n}", "ocr", 0, 1),
        ]
    for line in first:
        await sender.send(line)
    await sender.flush()
    await asyncio.sleep(2.5)  # j2 times out; the finished jobs have closed
    # Late events for j2, one delivery each: the missing part reopens it
    # (generation 1: amended), a part of a type it does not require reopens
    # it again (generation 2: a dead letter, no new version), and a
    # redelivery of that part finds it closed, a duplicate (no new run).
    for line in [
        part("acme", "j2", "detect", 1, 2),
        part("acme", "j2", "extra", 0, 1, eid="j2-extra"),
        part("acme", "j2", "extra", 0, 1, eid="j2-extra"),
    ]:
        await sender.send(line)
        await sender.flush()
        await asyncio.sleep(1)
    await asyncio.sleep(4)  # tenant summaries are written; j1's linger ends
    await sender.send(part("acme", "j1", "extra", 0, 1, eid="j1-too-late"))
    await sender.flush()
    await asyncio.sleep(2)
    # the shard count shrinks: the last shard's proxy is retired
    await retire_proxy(client, SHARDS - 1)
