"""Model tables: the declared shape of a model's rows, and the row checks.

A model (``actors.models``) writes rows of one table. The table is declared
by a msgspec Struct: its fields are the columns and their types (the
contract), its msgspec constraints are the data tests (``Meta(ge=, le=)``
for a range, ``Meta(pattern=, max_length=)``, ``Literal[...]`` for accepted
values, a non-optional field for not-null), and a key names the columns that,
with ``result_id``, identify a row. The system adds the columns of the result
the row belongs to (``result_id``, ``tenant_id``, ``job_id``, ``version``), as
it adds the record around a pipeline's output.

``ModelTable.check`` turns one row into its JSON body, or raises
``RowError`` naming the column and the check that failed. Sinks read a
table's columns and key from here (``ModelTable.columns``, ``record_id``):
this module knows no sink and no workflow.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

# The columns every model table has first: the result its rows belong to.
SYSTEM_COLUMNS: tuple[tuple[str, type], ...] = (
    ("result_id", str),
    ("tenant_id", str),
    ("job_id", str),
    ("version", int),
)
# Columns a row may not declare: the system's, and the SQL sink's own.
RESERVED_COLUMNS = frozenset({name for name, _ in SYSTEM_COLUMNS} | {"written_at"})
# A table name is a file name, a stream name and an SQL identifier at once.
TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
# Names the record kinds and the SQL sink already use.
RESERVED_TABLES = frozenset(
    {
        "job_results",
        "tenant_summaries",
        "dead_letters",
        "jobs_current",
        "model_tables",
    }
)

ColumnType = Literal["str", "int", "float", "bool", "datetime", "json"]
# Key columns must compare and print exactly (they make the record id).
KEY_TYPES = frozenset({"str", "int", "bool"})

_encode = msgspec.json.Encoder().encode
_NONE_TYPE = type(None)


class Column(msgspec.Struct, frozen=True):
    """One column of a model table: its name, type and whether it may be null."""

    name: str
    type: ColumnType
    nullable: bool


class RowError(Exception):
    """A row that fails its table's contract or one of its tests.

    Attributes:
        column: the column at fault, or None when the row as a whole is.
        check: which check failed: ``range``, ``length``, ``pattern``,
            ``accepted values``, ``not null``, ``type``, ``missing column``,
            ``unknown column`` or ``system column``.
        message: what msgspec (or the check) said, ``$.column`` path included.
    """

    def __init__(self, column: str | None, check: str, message: str) -> None:
        self.column = column
        self.check = check
        self.message = message
        where = "the row" if column is None else f"column {column}"
        super().__init__(f"{where} failed check {check}: {message}")

    @classmethod
    def of(cls, error: msgspec.ValidationError) -> RowError:
        message = str(error)
        return cls(_column_of(message), _check_of(message), message)


def _column_of(message: str) -> str | None:
    path = re.search(r" - at `\$\.([A-Za-z_][A-Za-z0-9_]*)", message)
    if path:
        return path.group(1)
    field = re.search(r"(?:missing required|contains unknown) field `([^`]+)`", message)
    return field.group(1) if field else None


def _check_of(message: str) -> str:
    if "missing required field" in message:
        return "missing column"
    if "contains unknown field" in message:
        return "unknown column"
    if "Invalid enum value" in message:
        return "accepted values"
    if "got `null`" in message:
        return "not null"
    if "matching regex" in message:
        return "pattern"
    if " of length " in message:
        return "length"
    if re.search(r"Expected `[^`]+` (?:[<>]=?|that is a multiple of) ", message):
        return "range"
    return "type"


def column_type(annotation: Any) -> tuple[ColumnType, bool]:
    """The column type of a field's annotation, and whether it is nullable.

    ``str`` (and ``Literal`` of strings) is text, ``int`` (and ``Literal`` of
    ints) an integer, ``float``, ``bool``, ``datetime``; ``dict``, ``list``,
    a nested Struct, ``msgspec.Raw`` and ``Any`` are JSON. ``X | None`` is
    ``X``, nullable; ``Annotated[X, ...]`` is ``X``.
    """
    nullable = False
    t = _unannotated(annotation)
    if get_origin(t) in (Union, types.UnionType):
        members = get_args(t)
        rest = [m for m in members if m is not _NONE_TYPE]
        if len(rest) != 1:
            raise TypeError(
                f"unsupported column type {annotation!r}: a union other than "
                "X | None has no column type"
            )
        nullable = len(rest) < len(members)
        t = _unannotated(rest[0])
    if get_origin(t) is Literal:
        values = get_args(t)
        if all(isinstance(v, str) for v in values):
            return "str", nullable
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "int", nullable
        raise TypeError(f"unsupported column type {annotation!r}: mixed Literal")
    if t is bool:
        return "bool", nullable
    if t is int:
        return "int", nullable
    if t is float:
        return "float", nullable
    if t is str:
        return "str", nullable
    if t is datetime:
        return "datetime", nullable
    if t is Any or t is msgspec.Raw:
        return "json", True
    if t in (dict, list) or get_origin(t) in (dict, list):
        return "json", nullable
    if isinstance(t, type) and issubclass(t, msgspec.Struct):
        return "json", nullable
    raise TypeError(
        f"unsupported column type {annotation!r}: use str, int, float, bool, "
        "datetime, dict, list, a Struct, msgspec.Raw or Any (optionally "
        "Annotated, Literal or | None)"
    )


def _unannotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


class ModelTable:
    """A model's table: its name, its row Struct and its key.

    Args:
        name: the table (and record kind): lower case letters, digits and
            ``_``, starting with a letter.
        row: the Struct whose fields are the columns after the system's.
        key: the row's columns that, with ``result_id``, are unique.

    Raises:
        TypeError, ValueError: the declaration is not one a sink can store.
    """

    def __init__(self, name: str, row: type[msgspec.Struct], key: tuple[str, ...]):
        if not TABLE_NAME.match(name) or name.endswith("_current"):
            raise ValueError(
                f"model table name {name!r}: use lower case letters, digits "
                "and _, starting with a letter, at most 48 characters, not "
                "ending in _current (the name of its view)"
            )
        if name in RESERVED_TABLES:
            raise ValueError(f"model table name {name!r} is taken by the system")
        if not (isinstance(row, type) and issubclass(row, msgspec.Struct)):
            raise TypeError(f"model {name}: row must be a msgspec Struct type")
        fields = msgspec.structs.fields(row)
        names = [f.name for f in fields]
        taken = RESERVED_COLUMNS.intersection(names)
        if taken:
            raise ValueError(
                f"model {name}: {sorted(taken)} are the system's columns; the "
                "system adds result_id, tenant_id, job_id and version itself"
            )
        if any(f.encode_name != f.name for f in fields):
            raise ValueError(f"model {name}: renamed fields are not supported")
        key = tuple(key)
        if not key or len(set(key)) != len(key):
            raise ValueError(f"model {name}: key must name distinct columns")
        columns = [Column(n, t, False) for n, t in _system_types()]
        for f in fields:
            kind, nullable = column_type(f.type)
            columns.append(Column(f.name, kind, nullable))
        by_name = {c.name: c for c in columns}
        for k in key:
            column = by_name.get(k)
            if column is None or k in RESERVED_COLUMNS:
                raise ValueError(f"model {name}: key column {k!r} is not a field")
            if column.type not in KEY_TYPES or column.nullable:
                raise TypeError(
                    f"model {name}: key column {k!r} must be a non-optional "
                    "str, int or bool"
                )
        self.name = name
        self.row = row
        self.key = key
        self.columns: tuple[Column, ...] = tuple(columns)
        record_fields: list[Any] = list(SYSTEM_COLUMNS)
        for f in fields:
            if f.default is not msgspec.NODEFAULT:
                record_fields.append((f.name, f.type, f.default))
            elif f.default_factory is not msgspec.NODEFAULT:
                record_fields.append(
                    (f.name, f.type, msgspec.field(default_factory=f.default_factory))
                )
            else:
                record_fields.append((f.name, f.type))
        self.record_type = msgspec.defstruct(
            f"{row.__name__}Record",
            record_fields,
            kw_only=True,
            forbid_unknown_fields=True,
        )
        self._decoder = msgspec.json.Decoder(self.record_type)
        id_fields = [("result_id", str), *((k, Any) for k in key)]
        self._id_decoder = msgspec.json.Decoder(
            msgspec.defstruct(f"{row.__name__}Id", id_fields)
        )

    def __repr__(self) -> str:
        return f"ModelTable({self.name!r}, {self.row.__name__}, key={self.key!r})"

    @property
    def primary_key(self) -> tuple[str, ...]:
        """``result_id`` and the key: the table's unique key."""
        return ("result_id", *self.key)

    def check(self, row: Any, system: Mapping[str, Any]) -> tuple[str, bytes]:
        """The record id and JSON body of one row, with the system's columns.

        Raises:
            RowError: the row breaks the contract (a missing, unknown or
                mistyped column) or a test (range, length, pattern, accepted
                values, not null).
        """
        if isinstance(row, msgspec.Struct):
            values = {name: getattr(row, name) for name in row.__struct_fields__}
        elif isinstance(row, Mapping):
            values = dict(row)
        else:
            raise RowError(
                None,
                "type",
                f"a row is a {self.row.__name__} or a dict, not {type(row).__name__}",
            )
        for name, value in system.items():
            if name in values and values[name] != value:
                raise RowError(
                    name, "system column", f"the row sets {name}; the system does"
                )
            values[name] = value
        try:
            text = _encode(values)
        except (TypeError, ValueError, OverflowError) as error:
            raise RowError(None, "type", f"not encodable as JSON: {error}") from None
        try:
            record = self._decoder.decode(text)
        except msgspec.ValidationError as error:
            raise RowError.of(error) from None
        body = _encode(record)
        return self.record_id_of(record), body

    def record_id_of(self, record: Any) -> str:
        """A row's record id: ``result_id`` and the key values as JSON."""
        key = msgspec.to_builtins([getattr(record, k) for k in self.key])
        return f"{record.result_id}/{_encode(key).decode()}"

    def record_id(self, body: bytes) -> str:
        """The record id of a row's body (what ``check`` returned with it)."""
        return self.record_id_of(self._id_decoder.decode(body))


def _system_types() -> list[tuple[str, ColumnType]]:
    return [(name, "int" if t is int else "str") for name, t in SYSTEM_COLUMNS]
