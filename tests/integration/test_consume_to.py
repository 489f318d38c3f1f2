"""``script.consume --from redis://... --to SINK``: what workers wrote to the
Redis stream loaded into tables downstream, exactly once per record id, also
when the consumer group reads everything again (as after a consumer that
never acknowledged)."""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from actors.models import EXAMPLE, load_models
from sinks import stream_key
from tests.support.audit import audit
from tests.support.polling import wait_until
from tests.support.processes import run_script
from tests.support.records import redis_progress
from tests.support.sql import as_dicts, read_model_rows, read_tables
from tests.support.temporal import address_of
from wire.synthetic import WorkloadSpec, generate

SPEC = WorkloadSpec(tenants=3, jobs=30, types=2, parts=2, duplicates=0.1, invalid=0.05)
GROUP = "loader"


async def stream_lengths(url: str, kinds: list[str]) -> dict[str, int]:
    client = aioredis.from_url(url)
    try:
        return {
            kind: await client.xlen(stream_key("eventflow", kind)) for kind in kinds
        }
    finally:
        await client.aclose()


async def read_again(url: str, kinds: list[str]) -> None:
    """Point the group back at the start of every stream: the next consumer
    reads every entry again, as if none had ever been acknowledged."""
    client = aioredis.from_url(url)
    try:
        for kind in kinds:
            await client.xgroup_setid(stream_key("eventflow", kind), GROUP, id="0")
    finally:
        await client.aclose()


async def test_consume_loads_the_stream_into_postgres_once_per_record(
    temporal, worker_process, redis_url: str, postgres_url: str, tmp_path
) -> None:
    lines, expected = generate(SPEC)
    assert expected.faulty, "the workload has a row that fails a model test"
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    address = address_of(temporal)
    worker_process(
        address,
        [
            "--shards",
            "2",
            "--sink",
            redis_url,
            "--model",
            EXAMPLE,
            "--summary-interval",
            "1",
        ],
    )
    run_script("script.emit", "--file", str(events), "--shards", "2", address=address)
    await wait_until(
        lambda: redis_progress(redis_url),
        lambda p: (
            p.results >= SPEC.jobs
            and p.dead_letters >= expected.dead_letters + len(expected.faulty)
            and p.jobs_completed >= SPEC.jobs
        ),
        limit_s=180,
    )
    tables = [m.table for m in load_models([EXAMPLE])]
    kinds = ["job.result", "dead_letter", "tenant.summary"] + [t.name for t in tables]
    lengths = await stream_lengths(redis_url, kinds)
    assert lengths["job_parts"] > 0
    assert lengths["detections"] > 0

    async def load() -> dict:
        done = run_script(
            "script.consume",
            "--from", redis_url,
            "--to", postgres_url,
            "--model", EXAMPLE,
            "--group", GROUP,
            address=address,
        )  # fmt: skip
        return msgspec.json.decode(done.stderr.splitlines()[-1])

    first = await load()
    assert first["event"] == "done"
    assert first["records"] == sum(lengths.values())

    async def check() -> None:
        held = await read_tables(postgres_url)
        records = as_dicts(held, expected)
        # The faulty rows' model dead letters, beside the workload's own.
        model_dead = [r for r in records if r.get("source") == "model"]
        assert len(model_dead) == len(expected.faulty)
        result = audit([r for r in records if r.get("source") != "model"], expected)
        assert result.clean, result.problems()
        rows = await read_model_rows(postgres_url, tables)
        for table in tables:
            assert len(rows[table.name]) == lengths[table.name], table.name
        assert len(held["job.result"]) == lengths["job.result"] == SPEC.jobs

    await check()
    # Everything read again: every write is skipped as held, nothing doubles.
    await read_again(redis_url, kinds)
    second = await load()
    assert second["records"] == sum(lengths.values())
    await check()
