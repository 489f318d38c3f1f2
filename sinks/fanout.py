"""Several sinks at once: every record to each, exactly once in each.

``FanOutSink`` writes a batch to all of its sinks concurrently. Each sink
skips what it already holds, so a retry after one sink failed writes nothing
twice in the others, and a healthy sink has each record as soon as it would
have alone.

An outage of one sink delays only what still has to reach it. Once the
workers have handed the fan-out a place to defer to (``defer_to``: the
workers start a durable catch-up workflow per batch, ``actors.catchup``), a
batch that some sinks hold and others failed to take (an error, or no answer
within ``member_timeout_s``) is deferred for the failed ones, and the write
succeeds: the deliveries behind it go on for every sink. While a sink is
down, later batches are deferred for it straight away, and one write at a
time probes it (after 1 s, doubling to ``PROBE_MAX_S``); the first that
succeeds brings it back. The catch-up writes land when the sink is back, in
a different order than the direct ones (each record is still keyed, and
written once).

Without a place to defer to (a fan-out outside the workers), or when no sink
took the batch, the write raises and its caller retries it, as with one sink.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import structlog
from prometheus_client import Counter

from sinks.base import Observer, Sink, SinkRecord

log = structlog.get_logger(__name__)

Defer = Callable[[str, Sequence[SinkRecord]], Awaitable[None]]
"""Hands ``records`` to durable work that writes them to the sink of that
name later; returns once that work is durable (it raises otherwise)."""

MEMBER_TIMEOUT_S = 15.0
PROBE_FIRST_S = 1.0
PROBE_MAX_S = 30.0

DEFERRED = Counter(
    "eventflow_sink_deferred_records",
    "Records handed to catch-up work because their sink was down while "
    "another sink of the fan-out took them, by sink.",
    ["sink"],
)


class _Down:
    """A member that failed: when it may be probed again, and how long to
    wait after the next failure."""

    def __init__(self, now: float) -> None:
        self.since = now
        self.wait_s = PROBE_FIRST_S
        self.probe_at = now + self.wait_s
        self.probing = False

    def failed_again(self, now: float) -> None:
        self.wait_s = min(self.wait_s * 2, PROBE_MAX_S)
        self.probe_at = now + self.wait_s


class FanOutSink(Sink):
    """``sinks``, written together; ``names`` (distinct) name them in errors,
    logs, metrics and the catch-up work."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        names: Sequence[str],
        *,
        member_timeout_s: float = MEMBER_TIMEOUT_S,
    ) -> None:
        if not sinks or len(sinks) != len(names):
            raise ValueError("a fan-out needs one name per sink, and a sink")
        if len(set(names)) != len(names):
            raise ValueError(f"a fan-out's sinks need distinct names: {names}")
        self.sinks = list(sinks)
        self.names = list(names)
        self._member_timeout_s = member_timeout_s
        self._defer: Defer | None = None
        self._down: dict[str, _Down] = {}

    @property
    def members(self) -> Mapping[str, Sink]:
        """The sinks by name."""
        return dict(zip(self.names, self.sinks, strict=True))

    def defer_to(self, defer: Defer) -> None:
        """From now on, a sink that fails a batch another sink took has the
        batch handed to ``defer`` (see the module docstring)."""
        self._defer = defer

    def down(self) -> list[str]:
        """The names of the sinks deferred to now."""
        return sorted(self._down)

    async def write(self, records: Sequence[SinkRecord]) -> int:
        """Write to every sink; returns the new records of the first sink that
        wrote them.

        Raises:
            SinkWriteFailed: a sink failed and its records could not be
                deferred (no sink took them, or there is no place to defer
                to); the message names each failed sink and why.
        """
        now = time.monotonic()
        skipped = self._skipped(now) if self._defer is not None else set()
        tried = [i for i, name in enumerate(self.names) if name not in skipped]
        outcomes = await asyncio.gather(
            *(self._attempt(i, records) for i in tried), return_exceptions=True
        )
        failed: list[tuple[str, BaseException]] = []
        written: list[int] = []
        for i, outcome in zip(tried, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancellation and the like pass through
                if isinstance(outcome, ValueError | TypeError):
                    raise outcome  # the records are wrong (every sink refuses)
                failed.append((self.names[i], outcome))
            else:
                written.append(outcome)
        now = time.monotonic()
        for name, error in failed:
            self._mark_down(name, error, now)
        if not failed and not skipped:
            return written[0]
        if self._defer is None or not written:
            raise SinkWriteFailed(
                failed or [(name, RuntimeError("down")) for name in skipped]
            ) from (failed[0][1] if failed else None)
        late = sorted({name for name, _ in failed} | skipped)
        await asyncio.gather(*(self._defer(name, records) for name in late))
        for name in late:
            DEFERRED.labels(name).inc(len(records))
        return written[0]

    def _skipped(self, now: float) -> set[str]:
        """The down sinks this write does not try: all but one prober each,
        and none when every sink is down (then all are tried)."""
        skipped = set()
        for name, down in self._down.items():
            if down.probing or now < down.probe_at:
                skipped.add(name)
            else:
                down.probing = True  # this write probes it
        if len(skipped) == len(self.names):
            return set()
        return skipped

    async def _attempt(self, index: int, records: Sequence[SinkRecord]) -> int:
        name, sink = self.names[index], self.sinks[index]
        if self._defer is None:
            return await sink.write(records)
        try:
            written = await asyncio.wait_for(
                sink.write(records), self._member_timeout_s
            )
        finally:
            # However this attempt ended (refused records, cancellation), it
            # is no longer the one probing the sink.
            if (probed := self._down.get(name)) is not None:
                probed.probing = False
        if (down := self._down.pop(name, None)) is not None:
            log.warning(
                "sink back: writing to it again",
                sink=name,
                down_s=round(time.monotonic() - down.since, 1),
            )
        return written

    def _mark_down(self, name: str, error: BaseException, now: float) -> None:
        if self._defer is None:
            return
        down = self._down.get(name)
        if down is None:
            self._down[name] = _Down(now)
            log.warning(
                "sink failed: deferring its records to catch-up work while it is down",
                sink=name,
                error=f"{type(error).__name__}: {error}"[:300],
            )
        else:
            down.failed_again(now)

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
