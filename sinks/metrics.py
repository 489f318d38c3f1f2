"""Prometheus metrics of the sinks: what each wrote, how fast, what failed.

``MeteredSink`` wraps any sink. It counts the records a write stored anew
(the sink reports them; a retried write that skips held ids counts nothing),
so ``eventflow_records_written_total`` equals what the sink holds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec
from prometheus_client import Counter, Histogram

from sinks.base import Sink, SinkRecord

RECORDS_WRITTEN = Counter(
    "eventflow_records_written",
    "Records a sink stored (each record id once), by sink, kind and, for "
    "job.result, status.",
    ["sink", "kind", "status"],
)
SINK_WRITE_SECONDS = Histogram(
    "eventflow_sink_write_seconds",
    "Duration of one sink write (a batch of records).",
    ["sink"],
)
SINK_ERRORS = Counter(
    "eventflow_sink_errors", "Sink writes that raised (and were retried).", ["sink"]
)


class _Status(msgspec.Struct):
    status: str = ""


_status = msgspec.json.Decoder(_Status)


def sink_name(url: str) -> str:
    """The sink label of a sink URL: its scheme (``file``, ``redis``...)."""
    scheme = url.split(":", 1)[0].lower()
    return {"rediss": "redis", "postgres": "postgresql"}.get(scheme, scheme)


class MeteredSink(Sink):
    """``inner``, with its writes timed and counted under the label ``name``."""

    def __init__(self, inner: Sink, name: str) -> None:
        self.inner = inner
        self.name = name
        self._seconds = SINK_WRITE_SECONDS.labels(name)
        self._errors = SINK_ERRORS.labels(name)
        inner.observe(self._count)

    async def write(self, records: Sequence[SinkRecord]) -> int:
        started = time.perf_counter()
        try:
            return await self.inner.write(records)
        except Exception:
            self._errors.inc()
            raise
        finally:
            self._seconds.observe(time.perf_counter() - started)

    async def prepare(self) -> None:
        await self.inner.prepare()

    async def close(self) -> None:
        await self.inner.close()

    def _count(self, records: Sequence[SinkRecord]) -> None:
        for record in records:
            status = (
                _status.decode(record.body).status
                if record.kind == "job.result"
                else ""
            )
            RECORDS_WRITTEN.labels(self.name, record.kind, status).inc()
