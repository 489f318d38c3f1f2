"""Fixtures the sink contract tests share: sinks over one store, closed after
the test. A contract class inherits ``SinkFactory`` and gives ``make_sink``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from sinks import Sink, SinkRecord


class SinkFactory:
    @pytest.fixture
    def make_sink(self) -> Callable[[], Sink]:
        """A factory of sinks over one shared store (files, a Redis db...)."""
        raise NotImplementedError("a sink test class must provide make_sink")

    @pytest.fixture
    async def new_sink(
        self, make_sink: Callable[[], Sink]
    ) -> AsyncIterator[Callable[[], Sink]]:
        made: list[Sink] = []

        def factory() -> Sink:
            made.append(make_sink())
            return made[-1]

        yield factory
        for sink in made:
            await sink.close()

    @pytest.fixture
    def sink(self, new_sink: Callable[[], Sink]) -> Sink:
        return new_sink()


class FailingSink(Sink):
    """``inner``, failing its first ``failures`` writes (or every write while
    ``down``), then writing through; ``attempts`` counts the writes tried."""

    def __init__(self, inner: Sink, failures: int = 0, *, down: bool = False) -> None:
        self.inner = inner
        self.failures = failures
        self.down = down
        self.attempts = 0

    async def write(self, records: Sequence[SinkRecord]) -> int:
        self.attempts += 1
        if self.down or self.failures > 0:
            self.failures = max(0, self.failures - 1)
            raise ConnectionError("the store is away")
        return await self.inner.write(records)

    async def prepare(self) -> None:
        await self.inner.prepare()

    async def close(self) -> None:
        await self.inner.close()
