"""Fixtures the sink contract tests share: sinks over one store, closed after
the test. A contract class inherits ``SinkFactory`` and gives ``make_sink``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from sinks import Sink


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
