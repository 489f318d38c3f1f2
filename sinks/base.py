"""The sink contract.

A sink stores records (see ``wire.records``) durably, keyed by record id,
and the rows of the model tables it is given (``wire.models.ModelTable``):
a row is a record of kind = the table's name.

Delivery guarantee: **exactly once per record id, given retries.** When
``write`` returns, every record passed to it is durable. A record whose id the
sink already holds is skipped, not written again, so a caller that retries a
failed or interrupted ``write`` with the same records (a Temporal activity
retry) never produces a duplicate. The first body written for an id wins.
``write`` may be called concurrently, from several processes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import msgspec

from wire.models import ModelTable
from wire.records import RECORD_KINDS, Record, encode_record, record_id, record_kind


class SinkRecord(msgspec.Struct, frozen=True):
    """A record ready for a sink: its kind, its stable id and its JSON body."""

    kind: str
    record_id: str
    body: bytes

    @classmethod
    def of(cls, record: Record) -> SinkRecord:
        return cls(record_kind(record), record_id(record), encode_record(record))


def known_kinds(tables: Sequence[ModelTable]) -> dict[str, ModelTable | None]:
    """The record kinds a sink takes: the three records' (None) and one per
    model table, by name. Two tables of one name are refused."""
    kinds: dict[str, ModelTable | None] = dict.fromkeys(RECORD_KINDS)
    for table in tables:
        if table.name in kinds:
            raise ValueError(f"two record kinds or model tables named {table.name!r}")
        kinds[table.name] = table
    return kinds


def unknown_kind(kind: str, kinds: dict[str, ModelTable | None]) -> ValueError:
    return ValueError(
        f"unknown record kind {kind!r}: expected one of {', '.join(kinds)}"
    )


Observer = Callable[[Sequence["SinkRecord"]], None]


class Sink(abc.ABC):
    """Where records go. See the module docstring for the guarantee.

    Implementations report the records a ``write`` stored anew (not those it
    skipped as held) to ``_written``, so that observers (metrics) count each
    record once however often it is retried. Observers may be called from a
    worker thread.
    """

    def observe(self, observer: Observer) -> None:
        """Call ``observer`` with the records each write stores anew."""
        self.__dict__.setdefault("_observers", []).append(observer)

    def _written(self, records: Sequence[SinkRecord]) -> None:
        for observer in self.__dict__.get("_observers", ()):
            observer(records)

    async def prepare(self) -> None:
        """Get ready before the first write (the SQL sink creates and checks
        its tables here, so a worker refuses to start on a schema it cannot
        write); a no-op for sinks that need nothing."""
        return None

    @abc.abstractmethod
    async def write(self, records: Sequence[SinkRecord]) -> int:
        """Store the records; returns how many were new (not held before)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and file handles."""

    async def __aenter__(self) -> Sink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
