"""Several sinks at once: every record to each, exactly once in each.

``FanOutSink`` writes a batch to all of its sinks concurrently and returns
only when every one of them holds it, so the caller's retry (a Temporal
activity's) covers them all; each sink skips what it already holds, so a
retry after one sink failed writes nothing twice in the others. A failure of
one sink does not stop the others from writing the batch: a healthy sink has
each record as soon as it would have alone.

What an outage of one sink does delay: the batches that are retried until it
is back keep their activity busy, and so the deliveries behind them (a shard
runs a few at a time) wait too, for every sink.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sinks.base import Observer, Sink, SinkRecord


class FanOutSink(Sink):
    """``sinks``, written together; ``names`` label them in errors."""

    def __init__(self, sinks: Sequence[Sink], names: Sequence[str]) -> None:
        if not sinks or len(sinks) != len(names):
            raise ValueError("a fan-out needs one name per sink, and a sink")
        self.sinks = list(sinks)
        self.names = list(names)

    async def write(self, records: Sequence[SinkRecord]) -> int:
        """Write to every sink; returns the first sink's count of new records.

        Raises:
            SinkWriteFailed: at least one sink failed (the others wrote); its
                message names each failed sink and why.
        """
        outcomes = await asyncio.gather(
            *(sink.write(records) for sink in self.sinks), return_exceptions=True
        )
        failed = [
            (name, outcome)
            for name, outcome in zip(self.names, outcomes, strict=True)
            if isinstance(outcome, BaseException)
        ]
        for _, outcome in failed:
            if not isinstance(outcome, Exception):
                raise outcome  # cancellation and the like pass through
        for _, outcome in failed:
            if isinstance(outcome, ValueError | TypeError):
                raise outcome  # the records are wrong (every sink refuses them)
        if failed:
            raise SinkWriteFailed(failed) from failed[0][1]
        first = outcomes[0]
        assert isinstance(first, int)
        return first

    def observe(self, observer: Observer) -> None:
        """Observers of the fan-out see what its first sink stores anew (each
        sink's own metrics observe that sink: ``MeteredSink``)."""
        self.sinks[0].observe(observer)

    async def prepare(self) -> None:
        for sink in self.sinks:
            await sink.prepare()

    async def close(self) -> None:
        outcomes = await asyncio.gather(
            *(sink.close() for sink in self.sinks), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome


class SinkWriteFailed(Exception):
    """Some sinks of a fan-out failed to write a batch (the others wrote it)."""

    def __init__(self, failed: list[tuple[str, BaseException]]) -> None:
        super().__init__(
            "; ".join(f"{name}: {type(e).__name__}: {e}"[:300] for name, e in failed)
        )
        self.failed = failed
