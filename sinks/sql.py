"""A sink that writes records as rows of SQL tables: PostgreSQL or SQLite.

One table per record kind, the same names and columns in both databases
(README's "Results as tables"):

- ``job_results`` (key ``result_id``, unique ``(tenant_id, job_id, version)``),
- ``tenant_summaries`` (key ``summary_id``),
- ``dead_letters`` (key ``dead_letter_id``),
- ``jobs_current``: a view of the latest version of each job,
- one table per model (``wire.models.ModelTable``), its columns from the row
  Struct, key ``(result_id, *key)``, and a view ``<table>_current`` of the
  rows of each job's latest version; ``model_tables`` records each model
  table's declared columns and key, which ``check_schema`` compares with the
  model at every start (schema evolution).

JSON fields are ``jsonb`` in PostgreSQL and JSON text in SQLite (a JSON
``null`` is SQL ``NULL``); times are ``timestamptz`` in PostgreSQL and RFC 3339
text in SQLite. Each record body is decoded once, straight into its row
(``RowDecoder``): the JSON fields stay the body's own JSON text, so payloads
are never decoded into Python objects and encoded again.

Exactly once per record id: a batch is one transaction of
``INSERT ... ON CONFLICT DO NOTHING ... RETURNING key`` per table, so a retried
batch inserts nothing twice, the first body written for an id wins, and the
returned keys count what was new. Nothing is read before it is written.
In PostgreSQL the statement takes the batch as one array per column
(``INSERT ... SELECT ... FROM unnest(...)``, see ``_Kind``); SQLite gets
SQLAlchemy's multi-row insert of the rows.

Drivers: asyncpg for PostgreSQL (the fastest asyncio driver, SQLAlchemy's
first-class async PostgreSQL dialect, binary protocol for ``jsonb`` and
``timestamptz``); aiosqlite for SQLite, so both databases share one
``AsyncEngine`` code path (aiosqlite is stdlib ``sqlite3`` on a thread). SQLite
connections run in WAL mode with a ``busy_timeout`` and begin every
transaction with ``BEGIN IMMEDIATE``: several worker processes writing one
file queue for the write lock instead of failing on a lock upgrade.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
import stamina
import structlog
from sqlalchemy import (
    TIMESTAMP,
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sinks.base import Sink, SinkRecord, known_kinds, unknown_kind
from sinks.urls import redact_url
from wire.models import Column as ModelColumn
from wire.models import ModelTable
from wire.records import (
    DeadLetter,
    JobResult,
    Record,
    TenantSummary,
)

log = structlog.get_logger(__name__)

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite:"
DEFAULT_SCHEMA = "eventflow"
# Seconds an SQLite writer waits for another process's write lock.
SQLITE_BUSY_TIMEOUT_S = 60.0
# The revision of the table layout below. The schema-evolution check (a later
# increment) compares it with what a database holds: see ``check_schema``.
SCHEMA_REVISION = 1


class Timestamp(TypeDecorator[str]):
    """An RFC 3339 time: ``timestamptz`` in PostgreSQL, the text in SQLite.

    Records carry times as strings; PostgreSQL gives them back as UTC instants
    written with ``Z`` (``2025-01-01T00:00:00Z``).
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(TIMESTAMP(timezone=True))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "postgresql":
            return value
        return datetime.fromisoformat(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return value


_encode = msgspec.json.Encoder().encode


def json_text(value: Any) -> str:
    """A JSON column's text. A ``msgspec.Raw`` is JSON already, cut from the
    record's body, so the payloads are never decoded and encoded again."""
    if isinstance(value, msgspec.Raw):
        return bytes(value).decode()
    return _encode(value).decode()


class Json(TypeDecorator[Any]):
    """JSON: ``jsonb`` in PostgreSQL, JSON text in SQLite; ``None`` is NULL.

    SQLite gets ``TEXT``, not SQLAlchemy's ``JSON``: a column declared ``JSON``
    has numeric affinity there, which would store a scalar such as ``5`` as an
    integer instead of JSON text. PostgreSQL's values are written by the
    engine's ``json_serializer`` (``json_text``).
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return json_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return msgspec.json.decode(value)


metadata = MetaData()

job_results = Table(
    "job_results",
    metadata,
    Column("result_id", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("job_id", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", Text, nullable=False),
    Column("events", Integer, nullable=False),
    Column("required", Json, nullable=True),
    Column("missing", Json, nullable=False),
    Column("analyses", Json, nullable=True),
    Column("opened_at", Timestamp, nullable=True),
    Column("completed_at", Timestamp, nullable=False),
    Column("written_at", Timestamp, nullable=False),
    Column("schema_version", Integer, nullable=False),
    UniqueConstraint("tenant_id", "job_id", "version", name="uq_job_results_version"),
    Index("ix_job_results_tenant_completed", "tenant_id", "completed_at"),
    Index("ix_job_results_status", "status"),
)

tenant_summaries = Table(
    "tenant_summaries",
    metadata,
    Column("summary_id", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("window_start", Timestamp, nullable=False),
    Column("window_end", Timestamp, nullable=False),
    Column("jobs_completed", Integer, nullable=False),
    Column("jobs_timed_out", Integer, nullable=False),
    Column("jobs_amended", Integer, nullable=False),
    Column("events", Integer, nullable=False),
    Column("analyses", Json, nullable=False),
    Column("dead_letters", Integer, nullable=False),
    Column("written_at", Timestamp, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Index("ix_tenant_summaries_tenant_window", "tenant_id", "window_start"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("dead_letter_id", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("raw_encoding", Text, nullable=False),
    Column("raw_truncated", Boolean, nullable=False),
    Column("event_id", Text, nullable=True),
    Column("tenant_id", Text, nullable=True),
    Column("job_id", Text, nullable=True),
    Column("at", Timestamp, nullable=False),
    Column("written_at", Timestamp, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Index("ix_dead_letters_tenant_at", "tenant_id", "at"),
)

# The declared columns and key of each model table, as the model declared
# them when the table was made or last evolved (JSON text in both databases).
model_tables = Table(
    "model_tables",
    metadata,
    Column("name", Text, primary_key=True),
    Column("columns", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("written_at", Timestamp, nullable=False),
)

TABLES: dict[str, Table] = {
    "job.result": job_results,
    "tenant.summary": tenant_summaries,
    "dead_letter": dead_letters,
}
RECORD_TYPES: dict[str, type[Record]] = {
    "job.result": JobResult,
    "tenant.summary": TenantSummary,
    "dead_letter": DeadLetter,
}
VIEW = "jobs_current"
# The latest version of each job; plain SQL both databases run.
_VIEW_SQL = (
    "SELECT * FROM {table} AS j WHERE j.version = "
    "(SELECT max(v.version) FROM {table} AS v "
    "WHERE v.tenant_id = j.tenant_id AND v.job_id = j.job_id)"
)


_NULL = msgspec.Raw(b"null")


class RowDecoder:
    """Decodes a record's body straight into its table's row, once.

    Built from the record type and the table, so neither can gain a field the
    other lacks: every field of the record is a column, and the only other
    column is ``written_at``. JSON columns are kept as the body's own JSON
    text (``msgspec.Raw``); the other fields are decoded and validated as the
    record type declares them.
    """

    def __init__(self, record_type: type[Record], table: Table) -> None:
        fields = msgspec.structs.fields(record_type)
        columns = {column.name for column in table.columns}
        if columns != {f.name for f in fields} | {"written_at"}:
            raise TypeError(
                f"table {table.name} does not match {record_type.__name__}: "
                f"columns {sorted(columns)}, fields {sorted(f.name for f in fields)}"
            )
        self.json = tuple(
            f.name for f in fields if isinstance(table.c[f.name].type, Json)
        )
        row_fields: list[tuple[Any, ...]] = []
        for f in fields:
            annotation = msgspec.Raw if f.name in self.json else f.type
            if f.required:
                row_fields.append((f.name, annotation))
            else:
                row_fields.append((f.name, annotation, f.default))
        row_type = msgspec.defstruct(
            f"{record_type.__name__}Row", row_fields, kw_only=True
        )
        self._decoder = msgspec.json.Decoder(row_type)
        self.decode = self._decoder.decode
        self.fields: tuple[str, ...] = row_type.__struct_fields__

    def row(self, body: bytes, written_at: str) -> dict[str, Any]:
        """The row of one record body, plus ``written_at``."""
        row = msgspec.structs.asdict(self._decoder.decode(body))
        for name in self.json:
            # A JSON null is SQL NULL: ``required IS NULL`` finds it.
            if row[name] == _NULL:
                row[name] = None
        row["written_at"] = written_at
        return row


KEYS: dict[str, str] = {
    kind: next(iter(table.primary_key.columns)).name for kind, table in TABLES.items()
}
ROW_DECODERS: dict[str, RowDecoder] = {
    kind: RowDecoder(RECORD_TYPES[kind], table) for kind, table in TABLES.items()
}


def record_from_row(kind: str, row: Any) -> Record:
    """The record a row holds (``written_at`` is the sink's, not the record's)."""
    # Column names are str subclasses (quoted_name); msgspec wants str.
    mapping = row._mapping if hasattr(row, "_mapping") else row
    values = {str(key): value for key, value in mapping.items()}
    values.pop("written_at", None)
    values["type"] = kind
    return msgspec.convert(values, RECORD_TYPES[kind])


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


_SQL_TYPES: dict[str, Any] = {
    "str": Text,
    "int": BigInteger,
    "float": Double,
    "bool": Boolean,
    "datetime": Timestamp,
    "json": Json,
}
# How a row's body decodes for its insert: times stay RFC 3339 text (the
# Timestamp type binds them), JSON stays the body's own JSON text.
_DECODE_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "datetime": str,
    "json": msgspec.Raw,
}


class ModelRows:
    """A model table in SQL: its ``Table`` (the row Struct's columns, then
    ``written_at``; key ``(result_id, *key)``) and its rows from bodies."""

    def __init__(self, spec: ModelTable, schema_metadata: MetaData) -> None:
        self.spec = spec
        self.table = Table(
            spec.name,
            schema_metadata,
            *(
                Column(c.name, _SQL_TYPES[c.type], nullable=c.nullable)
                for c in spec.columns
            ),
            Column("written_at", Timestamp, nullable=False),
            PrimaryKeyConstraint(*spec.primary_key, name=f"pk_{spec.name}"),
        )
        fields: list[tuple[Any, ...]] = []
        for c in spec.columns:
            annotation = _DECODE_TYPES[c.type]
            if c.nullable and c.type != "json":
                fields.append((c.name, annotation | None, None))
            elif c.nullable:
                fields.append((c.name, annotation, _NULL))
            else:
                fields.append((c.name, annotation))
        row_type = msgspec.defstruct(f"{spec.name}_row", fields, kw_only=True)
        self._decoder = msgspec.json.Decoder(row_type)
        self.decode = self._decoder.decode
        self.fields: tuple[str, ...] = row_type.__struct_fields__
        self.json = tuple(c.name for c in spec.columns if c.type == "json")

    def row(self, body: bytes, written_at: str) -> dict[str, Any]:
        row = msgspec.structs.asdict(self._decoder.decode(body))
        for name in self.json:
            if row[name] == _NULL:
                row[name] = None
        row["written_at"] = written_at
        return row


def _pg_array_type(column: Column[Any]) -> str:
    """The PostgreSQL array type a column's values travel in to ``unnest``.

    JSON travels as ``text[]`` and is cast to ``jsonb`` in the statement: the
    body's JSON text goes to the server as it is (asyncpg's ``jsonb`` codec
    would call the serializer once per value).
    """
    kind = column.type
    if isinstance(kind, Json):
        return "text"
    if isinstance(kind, Timestamp):
        return "timestamptz"
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, Double):
        return "float8"
    if isinstance(kind, BigInteger):
        return "int8"
    if isinstance(kind, Integer):
        return "int4"
    if isinstance(kind, Text):
        return "text"
    raise TypeError(f"column {column.name}: no PostgreSQL array type for {kind!r}")


def _from_raw(value: msgspec.Raw | None) -> str | None:
    # A JSON null is SQL NULL, as in ``RowDecoder.row``.
    if value is None or value == _NULL:
        return None
    return bytes(value).decode()


def _from_text_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class _Kind:
    """What the sink does with records of one kind: which table, how a body
    becomes its row (SQLite) or its values (PostgreSQL), and its key.

    PostgreSQL gets a batch as one array per column in one statement,
    ``INSERT ... SELECT ... FROM unnest($1, ...) ON CONFLICT DO NOTHING
    RETURNING key``: a fixed text whatever the batch size (prepared once per
    connection, no per-row parameters to bind or plan), and ``written_at``
    once. Measured against SQLAlchemy's multi-row ``VALUES`` (BENCHMARKS.md,
    "job_parts rows into PostgreSQL"): the client's CPU per row fell by
    about five, the server's by about a fifth.
    """

    def __init__(
        self, table: Table, decoder: RowDecoder | ModelRows, *, schema: str | None
    ) -> None:
        self.table = table
        self.row = decoder.row
        self.decode = decoder.decode
        self.key_columns = list(table.primary_key.columns)
        fields = decoder.fields
        self.key_index = [fields.index(column.name) for column in self.key_columns]
        columns = [table.c[name] for name in fields]
        self.convert: list[tuple[int, Any]] = [
            (i, _from_raw if isinstance(c.type, Json) else _from_text_time)
            for i, c in enumerate(columns)
            if isinstance(c.type, Json | Timestamp)
        ]
        quote = postgresql.dialect().identifier_preparer.quote
        names = [quote(name) for name in fields]
        target = quote(table.name)
        if schema is not None:
            target = f"{quote(schema)}.{target}"
        arrays = ", ".join(
            f"${n}::{_pg_array_type(c)}[]" for n, c in enumerate(columns, 1)
        )
        selected = ", ".join(
            f"u.{name}::jsonb" if isinstance(c.type, Json) else f"u.{name}"
            for name, c in zip(names, columns, strict=True)
        )
        self.pg_insert = (
            f"INSERT INTO {target} ({', '.join(names)}, {quote('written_at')}) "
            f"SELECT {selected}, ${len(columns) + 1}::timestamptz "
            f"FROM unnest({arrays}) AS u({', '.join(names)}) "
            "ON CONFLICT DO NOTHING RETURNING "
            + ", ".join(quote(c.name) for c in self.key_columns)
        )

    def key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[column.name] for column in self.key_columns)

    def pg_parameters(
        self, rows: Sequence[Any], written_at: datetime
    ) -> tuple[list[list[Any]], list[tuple[Any, ...]]]:
        """The statement's parameters for decoded rows (one list per column,
        then ``written_at``) and the rows' keys, in order."""
        values = map(msgspec.structs.astuple, rows)
        columns = [list(c) for c in zip(*values, strict=True)]
        keys = list(zip(*(columns[i] for i in self.key_index), strict=True))
        for i, convert in self.convert:
            columns[i] = [convert(value) for value in columns[i]]
        return [*columns, written_at], keys


class SchemaMismatch(RuntimeError):
    """A model table in the database that the model can no longer write."""


class SqlSink(Sink):
    """Records as rows, PostgreSQL (``postgresql://``) or SQLite (``sqlite:``).

    Args:
        url: ``postgresql://user[:password]@host:port/db[?schema=NAME]`` (also
            ``postgres://``; other query parameters go to asyncpg) or
            ``sqlite:PATH`` (``sqlite:./data/eventflow.db``).
        tables: the model tables whose rows it also takes, a table each.

    Tables are created on the first write when missing (or by ``prepare``);
    see the module docstring for the guarantee.
    """

    def __init__(self, url: str, *, tables: Sequence[ModelTable] = ()) -> None:
        self._url = url
        self._redacted = redact_url(url)
        self._names = known_kinds(tables)
        self._model_metadata = MetaData()
        self.models = [ModelRows(spec, self._model_metadata) for spec in tables]
        self.schema: str | None
        if url.startswith(POSTGRES_SCHEMES):
            self.dialect = "postgresql"
            parts = urlsplit(url)
            query = parse_qsl(parts.query, keep_blank_values=True)
            self.schema = dict(query).get("schema", DEFAULT_SCHEMA)
            rest = urlencode([(k, v) for k, v in query if k != "schema"])
            driver_url = urlunsplit(
                parts._replace(scheme="postgresql+asyncpg", query=rest)
            )
            self._engine = create_async_engine(
                make_url(driver_url),
                pool_pre_ping=True,
                # Driver errors would otherwise quote the rows: payloads.
                hide_parameters=True,
                json_serializer=json_text,
                json_deserializer=msgspec.json.decode,
                execution_options={"schema_translate_map": {None: self.schema}},
            )
        elif url.startswith(SQLITE_SCHEME):
            self.dialect = "sqlite"
            self.schema = None
            path = url.removeprefix(SQLITE_SCHEME)
            if path.startswith("//"):
                path = path[2:]
            if not path:
                raise ValueError(
                    f"sink URL {url!r}: no file after 'sqlite:'; "
                    "use sqlite:PATH, e.g. sqlite:./data/eventflow.db"
                )
            self.path = Path(path)
            self._engine = create_async_engine(
                f"sqlite+aiosqlite:///{self.path}", hide_parameters=True
            )
            _configure_sqlite(self._engine)
        else:
            raise ValueError(
                f"not an SQL sink URL {self._redacted!r}: expected "
                "postgresql://, postgres:// or sqlite:PATH"
            )
        self._kinds: dict[str, _Kind] = {
            kind: _Kind(table, ROW_DECODERS[kind], schema=self.schema)
            for kind, table in TABLES.items()
        }
        for model in self.models:
            self._kinds[model.spec.name] = _Kind(model.table, model, schema=self.schema)
        self._ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"SqlSink({self._redacted!r})"

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def ensure_schema(self) -> None:
        """Create the schema, tables, indexes and view when missing.

        Safe when several processes start at once: PostgreSQL serialises the
        DDL on an advisory lock, SQLite on ``BEGIN IMMEDIATE``.
        """
        if self._ready:
            return
        if self.dialect == "sqlite":
            await _to_thread_mkdir(self.path.parent)
        async with self._engine.begin() as conn:
            if self.dialect == "postgresql":
                assert self.schema is not None
                key = int.from_bytes(
                    hashlib.sha256(f"eventflow:{self.schema}".encode()).digest()[:8],
                    "big",
                    signed=True,
                )
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": key}
                )
                quoted = conn.dialect.identifier_preparer.quote(self.schema)
                await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
            await conn.run_sync(metadata.create_all, checkfirst=True)
            table = self._qualified(conn, job_results.name)
            view = self._qualified(conn, VIEW)
            create = (
                "CREATE OR REPLACE VIEW"
                if self.dialect == "postgresql"
                else "CREATE VIEW IF NOT EXISTS"
            )
            await conn.execute(
                text(f"{create} {view} AS {_VIEW_SQL.format(table=table)}")
            )
            await check_schema(conn, self.models, schema=self.schema)
            await conn.run_sync(self._model_metadata.create_all, checkfirst=True)
            for model in self.models:
                name = model.spec.name
                await conn.execute(
                    text(
                        f"{create} {self._qualified(conn, f'{name}_current')} AS "
                        f"SELECT m.* FROM {self._qualified(conn, name)} AS m "
                        f"JOIN {view} AS j ON j.result_id = m.result_id"
                    )
                )
        self._ready = True
        log.info(
            "sql sink ready",
            url=self._redacted,
            schema=self.schema,
            models=[m.spec.name for m in self.models],
        )

    async def prepare(self) -> None:
        """Create the tables and check the model tables' schemas now.

        Raises:
            SchemaMismatch: a model table can no longer be written as the
                model declares it (see ``check_schema``).
        """
        await self.ensure_schema()

    def _qualified(self, conn: AsyncConnection, name: str) -> str:
        quote = conn.dialect.identifier_preparer.quote
        if self.schema is None:
            return quote(name)
        return f"{quote(self.schema)}.{quote(name)}"

    async def write(self, records: Sequence[SinkRecord]) -> int:
        if self._closed:
            raise RuntimeError("the SQL sink is closed")
        postgres = self.dialect == "postgresql"
        held: dict[str, dict[str, tuple[SinkRecord, Any]]] = {}
        written_at = _now()
        for record in records:
            kind = self._kinds.get(record.kind)
            if kind is None:
                raise unknown_kind(record.kind, self._names)
            of_kind = held.setdefault(record.kind, {})
            # The first body for an id wins, within a batch as across batches.
            if record.record_id not in of_kind:
                try:
                    row = (
                        kind.decode(record.body)
                        if postgres
                        else kind.row(record.body, written_at)
                    )
                except msgspec.DecodeError as error:
                    raise ValueError(
                        f"record {record.kind}/{record.record_id}: its body is "
                        f"not a valid {record.kind} record: {error}"
                    ) from error
                of_kind[record.record_id] = (record, row)
        if not held:
            return 0
        await self.ensure_schema()
        fresh: list[SinkRecord] = []
        async with self._engine.begin() as conn:
            for name, kind in self._kinds.items():
                if name not in held:
                    continue
                given = [record for record, _ in held[name].values()]
                rows = [row for _, row in held[name].values()]
                if postgres:
                    parameters, keys = kind.pg_parameters(
                        rows, datetime.fromisoformat(written_at)
                    )
                    # A tuple: one execution of the statement, not many.
                    result = await conn.exec_driver_sql(
                        kind.pg_insert, tuple(parameters)
                    )
                else:
                    keys = [kind.key(row) for row in rows]
                    statement = (
                        sqlite.insert(kind.table)
                        .on_conflict_do_nothing()
                        .returning(*kind.key_columns)
                    )
                    result = await conn.execute(statement, rows)
                # By the row's key, which RETURNING gives back: the body's id
                # field or fields (SinkRecord.of makes record_id the same).
                by_key: dict[tuple[Any, ...], SinkRecord] = {}
                for key, record in zip(keys, given, strict=True):
                    by_key.setdefault(key, record)
                fresh += [by_key[tuple(row)] for row in result.all()]
        # Reported once the transaction has committed: they are durable now.
        self._written(fresh)
        return len(fresh)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._engine.dispose()


_columns_codec = msgspec.json.Decoder(list[ModelColumn])
_key_codec = msgspec.json.Decoder(list[str])

REBUILD = (
    "Such a change cannot be applied to the rows already written: version the "
    "table name (e.g. {name}_v2) to rebuild it under a new name, or restore "
    "the model's earlier definition"
)


async def check_schema(
    conn: AsyncConnection, models: Sequence[ModelRows], *, schema: str | None
) -> None:
    """Schema evolution of the model tables, at every start (dbt's
    ``on_schema_change: fail``, plus new nullable columns).

    Called in the DDL transaction. Compares each model's columns and key with
    what ``model_tables`` says its table was made with: a new nullable column
    is added (``ALTER TABLE ... ADD COLUMN``; its old rows hold NULL); a new
    required column, a changed type or nullability, a removed column or a
    changed key raise ``SchemaMismatch`` saying what changed and what to do.
    Missing tables are created afterwards (``create_all``). The three record
    tables are this code's own and always this layout (``SCHEMA_REVISION``).
    """
    registered = {
        row.name: row for row in (await conn.execute(select(model_tables))).all()
    }
    existing = set(
        await conn.run_sync(lambda c: inspect(c).get_table_names(schema=schema))
    )
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    quote = conn.dialect.identifier_preparer.quote
    for model in models:
        spec = model.spec
        name = spec.name
        columns_json = _encode(list(spec.columns)).decode()
        key_json = _encode(list(spec.primary_key)).decode()
        held = registered.get(name)
        if held is None:
            if name in existing:
                found = await conn.run_sync(
                    lambda c, n=name: [
                        col["name"] for col in inspect(c).get_columns(n, schema=schema)
                    ]
                )
                wanted = [c.name for c in spec.columns] + ["written_at"]
                if set(found) != set(wanted):
                    raise SchemaMismatch(
                        f"model table {name}: the database has a table of that "
                        f"name with columns {sorted(found)}, not the model's "
                        f"{sorted(wanted)}, and no record of how it was made. "
                        + REBUILD.format(name=name)
                    )
            await conn.execute(
                insert(model_tables).on_conflict_do_nothing(),
                {
                    "name": name,
                    "columns": columns_json,
                    "key": key_json,
                    "written_at": _now(),
                },
            )
            continue
        old_columns = {c.name: c for c in _columns_codec.decode(held.columns)}
        old_key = _key_codec.decode(held.key)
        new_columns = {c.name: c for c in spec.columns}
        problems: list[str] = []
        if old_key != list(spec.primary_key):
            problems.append(
                f"its key changed from ({', '.join(old_key)}) to "
                f"({', '.join(spec.primary_key)})"
            )
        for column in old_columns.values():
            now = new_columns.get(column.name)
            if now is None:
                problems.append(f"column {column.name} was removed")
            elif (now.type, now.nullable) != (column.type, column.nullable):
                problems.append(
                    f"column {column.name} changed type from {_shown(column)} "
                    f"to {_shown(now)}"
                )
        added = [c for c in spec.columns if c.name not in old_columns]
        for column in added:
            if not column.nullable:
                problems.append(
                    f"new column {column.name} ({_shown(column)}) is required: "
                    "the rows already written have no value for it; make it "
                    f"optional with a default ({column.name}: ... | None = None)"
                )
        if problems:
            raise SchemaMismatch(
                f"model table {name} cannot be written as the model declares "
                f"it: {'; '.join(problems)}. " + REBUILD.format(name=name)
            )
        if not added:
            continue
        if name in existing:
            table = quote(name) if schema is None else f"{quote(schema)}.{quote(name)}"
            for column in added:
                sql_type = model.table.c[column.name].type.compile(conn.dialect)
                await conn.execute(
                    text(
                        f"ALTER TABLE {table} ADD COLUMN {quote(column.name)} "
                        f"{sql_type}"
                    )
                )
            log.info(
                "model table evolved",
                table=name,
                added=[c.name for c in added],
            )
        await conn.execute(
            model_tables.update()
            .where(model_tables.c.name == name)
            .values(columns=columns_json, key=key_json, written_at=_now())
        )


def _shown(column: ModelColumn) -> str:
    return f"{column.type}{' or null' if column.nullable else ''}"


async def _to_thread_mkdir(directory: Path) -> None:
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)


def _locked(error: Exception) -> bool:
    return "database is locked" in str(error)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, say when a transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        # WAL is a property of the file, set once by its first connection.
        # Switching to it needs an exclusive lock that SQLite does not wait
        # for (busy_timeout does not apply): when processes open a new file at
        # once, the losers retry until the winner's switch is done.
        for attempt in stamina.retry_context(
            on=_locked, attempts=200, timeout=SQLITE_BUSY_TIMEOUT_S, wait_max=0.1
        ):
            with attempt:
                cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk when write returns, as the contract says
        # (NORMAL could lose the last commits to a power cut; it measured
        # about 15% faster, bench.sink_write).
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: a deferred transaction that reads
        # first cannot wait for it later (SQLITE_BUSY at once, no timeout).
        conn.exec_driver_sql("BEGIN IMMEDIATE")
