"""Reading an SQL sink's tables back as records, for assertions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import func, literal_column, select, text

from sinks.sql import (
    TABLES,
    SqlSink,
    dead_letters,
    job_results,
    record_from_row,
    tenant_summaries,
)
from tests.support.records import Progress
from wire.models import ModelTable
from wire.records import Record
from wire.synthetic import Expected


async def read_tables(url: str) -> dict[str, list[Record]]:
    """Every row of every table, per kind, in insertion order.

    Insertion order is SQLite's ``rowid`` and PostgreSQL's ``ctid`` (rows are
    only ever appended, never updated or deleted, so the heap keeps it).
    """
    sink = SqlSink(url)
    try:
        await sink.ensure_schema()
        order = literal_column("ctid" if sink.dialect == "postgresql" else "rowid")
        held: dict[str, list[Record]] = {}
        async with sink.engine.connect() as conn:
            for kind, table in TABLES.items():
                rows = await conn.execute(select(table).order_by(order))
                held[kind] = [record_from_row(kind, row) for row in rows]
        return held
    finally:
        await sink.close()


def as_dicts(held: dict[str, list[Record]], expected: Expected) -> list[dict]:
    """The tables' records as the dicts the audit reads.

    ``jsonb`` keeps no object key order, so each result's analysis types are
    put back in the workload's order (which the audit compares) when they are
    the same set.
    """
    records = [msgspec.to_builtins(r) for rows in held.values() for r in rows]
    for r in records:
        want = expected.payloads.get(f"{r.get('tenant_id')}/{r.get('job_id')}")
        if r["type"] == "job.result" and want and set(r["analyses"]) == set(want):
            r["analyses"] = {name: r["analyses"][name] for name in want}
    return records


async def sql_progress(url: str) -> Progress:
    """Counts to poll on: results, dead letters, jobs the summaries count
    (aggregates, so that polling a large run stays cheap)."""
    sink = SqlSink(url)
    try:
        await sink.ensure_schema()
        async with sink.engine.connect() as conn:

            async def scalar(query: Any) -> int:
                return int((await conn.execute(query)).scalar() or 0)

            return Progress(
                results=await scalar(select(func.count()).select_from(job_results)),
                dead_letters=await scalar(
                    select(func.count()).select_from(dead_letters)
                ),
                jobs_completed=await scalar(
                    select(func.sum(tenant_summaries.c.jobs_completed))
                ),
            )
    finally:
        await sink.close()


async def read_model_rows(
    url: str, tables: Sequence[ModelTable]
) -> dict[str, list[dict[str, Any]]]:
    """Every row of each model table (without ``written_at``), in insertion
    order, as the JSON its body held: times as RFC 3339 text, JSON decoded."""
    sink = SqlSink(url, tables=tables)
    try:
        await sink.ensure_schema()
        order = literal_column("ctid" if sink.dialect == "postgresql" else "rowid")
        held: dict[str, list[dict[str, Any]]] = {}
        async with sink.engine.connect() as conn:
            for model in sink.models:
                rows = await conn.execute(select(model.table).order_by(order))
                held[model.spec.name] = [
                    {
                        str(k): v
                        for k, v in row._mapping.items()
                        if str(k) != "written_at"
                    }
                    for row in rows
                ]
        return held
    finally:
        await sink.close()


async def count_rows(url: str, name: str) -> int:
    """The rows of a table or view of the sink's schema (``jobs_current``)."""
    sink = SqlSink(url)
    try:
        await sink.ensure_schema()
        qualified = f'"{sink.schema}".{name}' if sink.schema else name
        async with sink.engine.connect() as conn:
            query = text(f"SELECT count(*) FROM {qualified}")
            return int((await conn.execute(query)).scalar() or 0)
    finally:
        await sink.close()
