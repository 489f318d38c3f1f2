"""Models end to end: a real dev server, the workers in this process (the
strict sandbox) running ``job_parts`` and the example ``detections`` model,
writing to SQLite or to a real PostgreSQL. A synthetic workload (with its
faulty scores) and one amended job flow in; the model tables and their
``_current`` views must hold exactly the expected rows, and each faulty row
must be a ``model`` dead letter while its job's result was written."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import text

from actors.models import EXAMPLE, load_models
from actors.rules.job import JobSettings
from actors.rules.tenant import TenantSettings
from actors.settings import WorkerConfig
from ingress.sender import EventSender
from sinks.sql import SqlSink
from tests.support.events import opened, part
from tests.support.polling import wait_until
from tests.support.scenario import running_workers
from tests.support.sql import read_model_rows, read_tables
from wire.synthetic import FAULTY_SCORE, WorkloadSpec, generate

SHARDS = 2
SPEC = WorkloadSpec(tenants=3, jobs=24, types=2, parts=2, faulty_every=8)
CONFIG = WorkerConfig(
    shards=SHARDS,
    models=(EXAMPLE,),
    job=JobSettings(default_deadline_s=60, linger_s=30),
    tenant=TenantSettings(summary_interval_s=1),
    rollup_interval_s=1,
)
TABLES = [m.table for m in load_models(CONFIG.models)]


async def count(url: str, table: str) -> int:
    async with SqlSink(url) as sink:
        name = f'"{sink.schema}"."{table}"' if sink.schema else f'"{table}"'
        async with sink.engine.connect() as conn:
            return (await conn.execute(text(f"SELECT count(*) FROM {name}"))).scalar()


async def current(url: str, table: str, columns: str) -> list[tuple]:
    async with SqlSink(url) as sink:
        name = f'"{sink.schema}"."{table}"' if sink.schema else f'"{table}"'
        async with sink.engine.connect() as conn:
            rows = await conn.execute(
                text(f"SELECT {columns} FROM {name} ORDER BY {columns}")
            )
            return [tuple(row) for row in rows]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_model_rows_and_model_dead_letters_land_in_the_tables(
    database: str, temporal, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if database == "sqlite":
        url = f"sqlite:{tmp_path}/data/eventflow.db"
    else:
        url = request.getfixturevalue("postgres_url")
    lines, expected = generate(SPEC)
    assert len(expected.faulty) == 3, "the workload has faulty scores"
    # One job that times out with a part missing, then is amended by it.
    amended = [
        opened("acme", "late", ["detect"], deadline_s=1),
        part("acme", "late", "detect", 0, 2),
    ]

    async with running_workers(temporal.client, tmp_path, CONFIG, sink_url=url):
        sender = EventSender(temporal.client, shards=SHARDS, batch_size=20)
        for line in [*lines, *amended]:
            await sender.send(line)
        await sender.flush()
        await wait_until(
            lambda: read_tables(url),
            lambda held: any(r.result_id == "acme/late/1" for r in held["job.result"]),
            limit_s=120,
            settle_s=0,
        )
        await sender.send(part("acme", "late", "detect", 1, 2))
        await sender.flush()
        await wait_until(
            lambda: read_tables(url),
            lambda held: (
                len(held["job.result"]) >= SPEC.jobs + 2
                and len(held["dead_letter"]) >= len(expected.faulty)
            ),
            limit_s=180,
        )
    held = await read_tables(url)
    rows = await read_model_rows(url, TABLES)

    # Every job's result was written, the faulty ones' included, once.
    results = Counter(r.result_id for r in held["job.result"])
    assert results == Counter(
        [f"{key}/1" for key in expected.payloads] + ["acme/late/1", "acme/late/2"]
    )
    # Each faulty row is one model dead letter, and nothing else was refused.
    model_dead = {d.dead_letter_id: d for d in held["dead_letter"]}
    assert set(model_dead) == {f"{key}/1/model/detections/0" for key in expected.faulty}
    for dead in model_dead.values():
        assert dead.source == "model"
        assert "model detections" in dead.reason
        assert "column score failed check range" in dead.reason
        assert msgspec.json.decode(dead.raw)["score"] == FAULTY_SCORE

    # job_parts: one row per part of every result version, payload exact.
    want_parts: Counter[tuple[Any, ...]] = Counter()
    for key, types in expected.payloads.items():
        for analysis_type, bodies in types.items():
            for n, body in enumerate(bodies):
                want_parts[(f"{key}/1", analysis_type, n, _json(body))] += 1
    want_parts[("acme/late/1", "detect", 0, _json(_payload(0)))] += 1
    for n in range(2):
        want_parts[("acme/late/2", "detect", n, _json(_payload(n)))] += 1
    got_parts = Counter(
        (r["result_id"], r["analysis_type"], r["part"], _json(r["payload"]))
        for r in rows["job_parts"]
    )
    assert got_parts == want_parts
    assert all(
        r["version"] == int(r["result_id"].rsplit("/", 1)[1]) for r in rows["job_parts"]
    )

    # detections: one row per detected object, but the faulty ones.
    want_detections: Counter[tuple[Any, ...]] = Counter()
    for key, types in expected.payloads.items():
        for n, body in enumerate(types["detect"]):
            for index, found in enumerate(msgspec.json.decode(body)["detections"]):
                if key in expected.faulty and n == 0 and index == 0:
                    continue
                want_detections[(f"{key}/1", n, index, found["label"])] += 1
    got_detections = Counter(
        (r["result_id"], r["part"], r["index"], r["label"]) for r in rows["detections"]
    )
    assert got_detections == want_detections
    assert all(0 <= r["score"] <= 1 for r in rows["detections"])

    # The views: every job's latest version only.
    current_parts = await current(url, "job_parts_current", "result_id, part")
    assert [row for row in current_parts if row[0].startswith("acme/late/")] == [
        ("acme/late/2", 0),
        ("acme/late/2", 1),
    ]
    assert len(current_parts) == len(rows["job_parts"]) - 1
    assert await count(url, "detections_current") == len(rows["detections"])


def _payload(n: int) -> Any:
    return {"label": f"detect-{n}", "score": 0.5 + n / 10}


def _json(value: Any) -> Any:
    """A payload as comparable JSON (jsonb keeps no key order)."""
    if isinstance(value, bytes):
        value = msgspec.json.decode(value)
    return msgspec.json.encode(_sorted(value))


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value
