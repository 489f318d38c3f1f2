"""Model rows in every sink (the sink contract, ``sinks.base``, for the rows
of model tables), and the SQL sink's model tables: columns, key, the
``<table>_current`` view and schema evolution at start.

Real stores: files, a real ``redis-server``, SQLite and a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from sqlalchemy import inspect, text

from actors.models import job_parts
from sinks import FileSink, RedisStreamSink, Sink, SinkRecord, SqlSink, stream_key
from sinks.redis_streams import RECORD_FIELD
from sinks.sql import SchemaMismatch
from tests.support.sinks import SinkFactory
from tests.support.sql import read_model_rows
from wire.models import ModelTable
from wire.records import JobResult


class Thing(msgspec.Struct, kw_only=True):
    name: str
    n: int
    ratio: float
    flag: bool
    seen: datetime
    tags: list[str]
    note: str | None = None


THINGS = ModelTable("things", Thing, ("name", "n"))
PARTS = job_parts.table
TABLES = (THINGS, PARTS)

Rows = dict[str, list[dict[str, Any]]]
ReadRows = Callable[[], Awaitable[Rows]]


def system(version: int = 1, job: str = "j1") -> dict[str, Any]:
    return {
        "result_id": f"t1/{job}/{version}",
        "tenant_id": "t1",
        "job_id": job,
        "version": version,
    }


def thing(i: int, *, version: int = 1, job: str = "j1", note: str | None = None):
    row = {
        "name": f"thing-{i % 3}",
        "n": i,
        "ratio": i / 8,
        "flag": i % 2 == 0,
        "seen": "2026-01-01T00:00:00Z",
        "tags": [f"tag{i}"],
        "note": note,
    }
    record_id, body = THINGS.check(row, system(version, job))
    return SinkRecord("things", record_id, body)


def part_row(i: int) -> SinkRecord:
    row = {
        "analysis_type": "ocr",
        "part": i,
        "parts": 9,
        "event_id": f"e{i}",
        "payload": msgspec.Raw(b'{"text": "page %d", "x": [1, 2.5]}' % i),
    }
    record_id, body = PARTS.check(row, system())
    return SinkRecord("job_parts", record_id, body)


def rows(*records: SinkRecord) -> Rows:
    held: Rows = {"things": [], "job_parts": []}
    for record in records:
        held[record.kind].append(msgspec.json.decode(record.body))
    return held


def result(version: int, job: str = "j1") -> SinkRecord:
    return SinkRecord.of(
        JobResult(
            result_id=f"t1/{job}/{version}",
            tenant_id="t1",
            job_id=job,
            version=version,
            status="complete" if version == 1 else "amended",
            events=1,
            analyses=None,
            required=None,
            missing={},
            opened_at=None,
            completed_at="2026-01-01T00:01:00Z",
        )
    )


class ModelRowContract(SinkFactory):
    """What every sink does with model rows; subclasses give the store."""

    @pytest.fixture
    def read_rows(self) -> ReadRows:
        raise NotImplementedError

    async def test_rows_read_back_as_their_bodies_beside_the_records(
        self, sink: Sink, read_rows: ReadRows
    ) -> None:
        batch = [thing(1), part_row(0), result(1), thing(2), part_row(1)]
        await sink.prepare()

        assert await sink.write(batch) == 5

        assert await read_rows() == rows(thing(1), thing(2), part_row(0), part_row(1))

    async def test_a_retried_batch_adds_no_row(
        self, sink: Sink, read_rows: ReadRows
    ) -> None:
        batch = [thing(n) for n in range(5)] + [part_row(0)]
        await sink.write(batch)

        assert await sink.write([*batch, thing(5)]) == 1

        assert await read_rows() == rows(*[thing(n) for n in range(6)], part_row(0))

    async def test_the_first_body_of_a_row_id_wins(
        self, sink: Sink, read_rows: ReadRows
    ) -> None:
        first, second = thing(1), thing(1, note="changed")
        assert first.record_id == second.record_id

        assert await sink.write([first, second]) == 1
        assert await sink.write([second]) == 0

        assert (await read_rows())["things"] == rows(first)["things"]

    async def test_a_new_sink_over_the_same_store_skips_held_rows(
        self, new_sink: Callable[[], Sink], read_rows: ReadRows
    ) -> None:
        await new_sink().write([thing(n) for n in range(4)])

        assert await new_sink().write([thing(n) for n in range(6)]) == 2

        assert (await read_rows())["things"] == rows(*[thing(n) for n in range(6)])[
            "things"
        ]

    async def test_concurrent_writers_write_each_row_once(
        self, new_sink: Callable[[], Sink], read_rows: ReadRows
    ) -> None:
        records = [thing(n) for n in range(40)]
        sinks = [new_sink(), new_sink()]
        written = await asyncio.gather(
            *(sinks[t % 2].write(records[(t * 5) % 30 :][:12]) for t in range(12))
        )

        held = (await read_rows())["things"]
        ids = sorted((r["name"], r["n"]) for r in held)
        assert len(ids) == len(set(ids)) == sum(written)

    async def test_a_table_the_sink_was_not_given_is_refused(self, sink: Sink) -> None:
        with pytest.raises(ValueError, match="unknown record kind 'others'"):
            await sink.write([SinkRecord("others", "x", b"{}")])

    async def test_observers_see_rows_stored_anew(self, sink: Sink) -> None:
        seen: list[str] = []
        sink.observe(lambda records: seen.extend(r.record_id for r in records))

        await sink.write([thing(1), part_row(0)])
        await sink.write([thing(1), thing(2)])

        assert sorted(seen) == sorted(
            [thing(1).record_id, part_row(0).record_id, thing(2).record_id]
        )


class TestFileSinkRows(ModelRowContract):
    @pytest.fixture
    def make_sink(self, tmp_path: Path) -> Callable[[], Sink]:
        return lambda: FileSink(tmp_path, tables=TABLES)

    @pytest.fixture
    def read_rows(self, tmp_path: Path) -> ReadRows:
        async def read() -> Rows:
            held: Rows = {}
            for table in ("things", "job_parts"):
                path = tmp_path / f"{table}.jsonl"
                lines = path.read_bytes().splitlines() if path.exists() else []
                held[table] = [msgspec.json.decode(line) for line in lines]
            return held

        return read

    async def test_each_table_is_its_own_file_of_the_bodies(
        self, sink: Sink, tmp_path: Path
    ) -> None:
        await sink.write([thing(1), part_row(0)])

        assert (tmp_path / "things.jsonl").read_bytes() == thing(1).body + b"\n"
        assert (tmp_path / "job_parts.jsonl").read_bytes() == part_row(0).body + b"\n"


class TestRedisSinkRows(ModelRowContract):
    @pytest.fixture
    def make_sink(self, redis_url: str) -> Callable[[], Sink]:
        return lambda: RedisStreamSink(redis_url, id_ttl_s=600, tables=TABLES)

    @pytest.fixture
    def read_rows(self, redis_url: str) -> ReadRows:
        async def read() -> Rows:
            with redis.Redis.from_url(redis_url) as client:
                return {
                    table: [
                        msgspec.json.decode(fields[RECORD_FIELD])
                        for _, fields in client.xrange(stream_key("eventflow", table))
                    ]
                    for table in ("things", "job_parts")
                }

        return read


class SqlRows(ModelRowContract):
    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def make_sink(self, url: str) -> Callable[[], Sink]:
        return lambda: SqlSink(url, tables=TABLES)

    @pytest.fixture
    def read_rows(self, url: str) -> ReadRows:
        return lambda: read_model_rows(url, TABLES)

    async def test_the_current_view_holds_the_rows_of_each_jobs_latest_version(
        self, sink: SqlSink
    ) -> None:
        await sink.write(
            [
                result(1),
                thing(1),
                thing(2),
                result(2),
                thing(3, version=2),
                result(1, job="j2"),
                thing(4, job="j2"),
            ]
        )

        assert await self.current(sink, "things") == [
            ("t1/j1/2", 3),
            ("t1/j2/1", 4),
        ]

    async def current(self, sink: SqlSink, table: str) -> list[tuple]:
        async with sink.engine.connect() as conn:
            found = await conn.execute(
                text(
                    f"SELECT result_id, n FROM {qualified(sink, table + '_current')} "
                    "ORDER BY result_id, n"
                )
            )
            return [tuple(row) for row in found]

    async def test_the_key_is_result_id_and_the_models_key(self, sink: SqlSink) -> None:
        await sink.prepare()
        async with sink.engine.connect() as conn:
            key = await conn.run_sync(
                lambda c: inspect(c).get_pk_constraint("things", schema=sink.schema)
            )
        assert key["constrained_columns"] == ["result_id", "name", "n"]

    async def test_a_new_optional_field_becomes_a_new_nullable_column(
        self, url: str, read_rows: ReadRows
    ) -> None:
        async with SqlSink(url, tables=TABLES) as old:
            await old.write([result(1), thing(1)])
        wider = evolved(("score", float | None, None))

        async with SqlSink(url, tables=(wider,)) as new:
            await new.prepare()
            record_id, body = wider.check(
                {**msgspec.json.decode(thing(2).body), "score": 0.5}, system()
            )
            assert await new.write([SinkRecord("things", record_id, body)]) == 1
            current = await self.current(new, "things")

        held = (await read_model_rows(url, (wider,)))["things"]
        assert [(r["n"], r["score"]) for r in held] == [(1, None), (2, 0.5)]
        assert current == [("t1/j1/1", 1), ("t1/j1/1", 2)]
        async with SqlSink(url, tables=(wider,)) as again:
            await again.prepare()  # the registry says it has the column now

    @pytest.mark.parametrize(
        ("change", "says"),
        [
            ("type", "column n changed type from int to str"),
            ("nullability", "column ratio changed type from float to float or null"),
            ("removed", "column tags was removed"),
            ("required", "new column score (float) is required"),
            ("key", "its key changed from (result_id, name, n) to (result_id, n)"),
        ],
    )
    async def test_a_change_that_cannot_be_applied_refuses_to_start(
        self, url: str, change: str, says: str
    ) -> None:
        async with SqlSink(url, tables=TABLES) as old:
            await old.write([result(1), thing(1)])
        table = {
            "type": lambda: evolved(("n", str)),
            "nullability": lambda: evolved(("ratio", float | None, None)),
            "removed": lambda: evolved(drop="tags"),
            "required": lambda: evolved(("score", float)),
            "key": lambda: evolved(key=("n",)),
        }[change]()

        async with SqlSink(url, tables=(table,)) as new:
            with pytest.raises(SchemaMismatch) as refused:
                await new.prepare()

        assert says in str(refused.value)
        assert "model table things" in str(refused.value)
        assert "things_v2" in str(refused.value)
        # Nothing changed: the old model still writes.
        async with SqlSink(url, tables=TABLES) as old:
            assert await old.write([thing(2)]) == 1

    async def test_a_table_of_that_name_made_by_someone_else_refuses_to_start(
        self, url: str
    ) -> None:
        async with SqlSink(url) as plain:
            await plain.prepare()
            async with plain.engine.begin() as conn:
                await conn.execute(
                    text(f"CREATE TABLE {qualified(plain, 'things')} (x text)")
                )

        async with SqlSink(url, tables=TABLES) as sink:
            with pytest.raises(SchemaMismatch, match="no record of how it was made"):
                await sink.prepare()


def evolved(
    *changed: tuple[Any, ...], drop: str | None = None, key: tuple[str, ...] = ()
) -> ModelTable:
    """``things`` with fields changed or added, one dropped, or another key."""
    fields: dict[str, tuple[Any, ...]] = {}
    for f in msgspec.structs.fields(Thing):
        if f.name != drop:
            default = () if f.required else (f.default,)
            fields[f.name] = (f.name, f.type, *default)
    for spec in changed:
        fields[spec[0]] = spec
    row = msgspec.defstruct("Thing", list(fields.values()), kw_only=True)
    return ModelTable("things", row, key or ("name", "n"))


def qualified(sink: SqlSink, name: str) -> str:
    return f'"{sink.schema}"."{name}"' if sink.schema else f'"{name}"'


class TestSqliteRows(SqlRows):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"sqlite:{tmp_path}/data/eventflow.db"

    async def test_column_types(self, sink: SqlSink) -> None:
        await sink.prepare()
        async with sink.engine.connect() as conn:
            found = await conn.execute(text("PRAGMA table_info(things)"))
            columns = {row[1]: (row[2], not row[3]) for row in found}
        assert columns == {
            "result_id": ("TEXT", False),
            "tenant_id": ("TEXT", False),
            "job_id": ("TEXT", False),
            "version": ("BIGINT", False),
            "name": ("TEXT", False),
            "n": ("BIGINT", False),
            "ratio": ("DOUBLE", False),
            "flag": ("BOOLEAN", False),
            "seen": ("TEXT", False),
            "tags": ("TEXT", False),
            "note": ("TEXT", True),
            "written_at": ("TEXT", False),
        }


class TestPostgresRows(SqlRows):
    @pytest.fixture
    def url(self, postgres_url: str) -> str:
        return postgres_url

    async def test_column_types(self, sink: SqlSink) -> None:
        await sink.prepare()
        async with sink.engine.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT table_name, column_name, data_type, is_nullable "
                    "FROM information_schema.columns WHERE table_schema = 'eventflow'"
                )
            )
            columns: dict[str, dict[str, tuple[str, str]]] = {}
            for table, column, data_type, nullable in found:
                columns.setdefault(table, {})[column] = (data_type, nullable)
        assert columns["things"] == {
            "result_id": ("text", "NO"),
            "tenant_id": ("text", "NO"),
            "job_id": ("text", "NO"),
            "version": ("bigint", "NO"),
            "name": ("text", "NO"),
            "n": ("bigint", "NO"),
            "ratio": ("double precision", "NO"),
            "flag": ("boolean", "NO"),
            "seen": ("timestamp with time zone", "NO"),
            "tags": ("jsonb", "NO"),
            "note": ("text", "YES"),
            "written_at": ("timestamp with time zone", "NO"),
        }
        assert columns["job_parts"]["payload"] == ("jsonb", "YES")
        assert set(columns["things_current"]) == set(columns["things"])
