"""Reading an SQL sink's tables back as records, for assertions."""

from __future__ import annotations

from sqlalchemy import literal_column, select

from sinks.sql import TABLES, SqlSink, record_from_row
from wire.records import Record


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
