"""Read records back out of the Redis stream sink with a consumer group.

At-least-once: a batch is acknowledged only when the caller says so, after it
has stored the records. Records a consumer read but never acknowledged (it
died) stay pending in the group, and the next consumer takes them over with
XAUTOCLAIM once they have been idle for ``min_idle_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sinks.base import SinkRecord
from sinks.redis_streams import ID_FIELD, RECORD_FIELD, stream_key
from wire.records import RECORD_KINDS

log = structlog.get_logger(__name__)

_CURSOR_DONE = "0-0"


class StreamEntry(NamedTuple):
    """One stream entry handed to the caller."""

    stream: str
    entry_id: str
    record: bytes  # the JSON record, exactly as the sink stored it
    kind: str = ""  # the record kind or model table the stream holds
    record_id: str = ""  # the record's id, as the sink keyed it

    def as_sink_record(self) -> SinkRecord:
        """The entry as the sinks take it: written once per record id."""
        return SinkRecord(self.kind, self.record_id, self.record)


class StreamConsumer:
    """A member of a consumer group over the record streams.

    Iterate ``batches()``; after storing each batch, ``ack`` it. Until then
    its entries stay pending, owned by this consumer.

    Args:
        client: A ``redis.asyncio`` client (either ``decode_responses`` works).
        prefix: The sink's key prefix.
        group: Consumer group name; consumers in one group share the work.
        consumer_name: This consumer's name within the group.
        kinds: Record kinds to read; one stream each.
        min_idle_ms: Take over another consumer's pending entries once they
            have been idle this long.
        count: Most entries per batch (per stream).
        block_ms: With ``follow``, how long one read waits for new entries.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "eventflow",
        group: str,
        consumer_name: str,
        kinds: Iterable[str] = RECORD_KINDS,
        min_idle_ms: int = 30_000,
        count: int = 500,
        # Under redis-py's default 5 s socket timeout, which would otherwise
        # end an empty blocking read before the server answers it.
        block_ms: int = 2_000,
    ) -> None:
        if min_idle_ms < 0:
            raise ValueError(f"min_idle_ms must be >= 0, got {min_idle_ms}")
        if count <= 0:
            raise ValueError(f"count must be positive, got {count}")
        self._client = client
        self._group = group
        self._consumer = consumer_name
        self._kinds = {stream_key(prefix, kind): kind for kind in kinds}
        self._streams = list(self._kinds)
        self._min_idle_ms = min_idle_ms
        self._count = count
        self._block_ms = block_ms
        self._stop = asyncio.Event()
        self._groups_ready = False

    @property
    def streams(self) -> list[str]:
        """The stream keys this consumer reads."""
        return list(self._streams)

    def stop(self) -> None:
        """Make ``batches()`` finish after the batch in hand; signal-handler safe."""
        self._stop.set()

    async def ensure_groups(self) -> None:
        """Create the group on every stream (and the stream itself) if missing.

        A new group starts from the beginning of the stream ("0"), so records
        written before the first consumer ran are not lost.
        """
        for stream in self._streams:
            try:
                await self._client.xgroup_create(
                    stream, self._group, id="0", mkstream=True
                )
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
        self._groups_ready = True

    async def batches(
        self, *, follow: bool = False
    ) -> AsyncIterator[list[StreamEntry]]:
        """Yield batches of entries: abandoned ones first, then new ones, and
        abandoned ones again at least every ``min_idle_ms``.

        Args:
            follow: Keep waiting for new entries until ``stop()``. Without it,
                finish once a read finds nothing new and nothing is claimable.

        Yields:
            Non-empty lists of entries, all from one stream.
        """
        if not self._groups_ready:
            await self.ensure_groups()
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            async for batch in self._claim_abandoned():
                yield batch
                if self._stop.is_set():
                    return
            claimed_at = loop.time()
            read_any = False
            while not self._stop.is_set():
                batches = await self._read_new(
                    block_ms=self._block_ms if follow else None
                )
                if batches is None or not batches:
                    break
                read_any = True
                for batch in batches:
                    yield batch
                    if self._stop.is_set():
                        # The rest of this read stays pending for XAUTOCLAIM.
                        return
                # Entries a consumer abandoned since the last claim become
                # claimable after min_idle_ms: look again by then, even while
                # new entries keep coming (a read then never comes back empty).
                if loop.time() - claimed_at >= self._min_idle_ms / 1000:
                    break
            if not follow and not read_any and not await self._has_claimable():
                return

    async def ack(self, stream: str, ids: Sequence[str]) -> int:
        """Acknowledge entries once their records are stored.

        Returns:
            How many of them were pending.
        """
        if not ids:
            return 0
        return int(await self._client.xack(stream, self._group, *ids))

    async def _claim_abandoned(self) -> AsyncIterator[list[StreamEntry]]:
        for stream in self._streams:
            cursor = _CURSOR_DONE
            while True:
                response = await self._client.xautoclaim(
                    stream,
                    self._group,
                    self._consumer,
                    min_idle_time=self._min_idle_ms,
                    start_id=cursor,
                    count=self._count,
                )
                cursor = _text(response[0])
                batch = await self._entries(stream, response[1])
                if batch:
                    log.info(
                        "claimed abandoned entries", stream=stream, count=len(batch)
                    )
                    yield batch
                if cursor == _CURSOR_DONE:
                    break

    async def _has_claimable(self) -> bool:
        """Whether any entry is pending and idle long enough to claim."""
        for stream in self._streams:
            pending = await self._client.xpending_range(
                stream, self._group, min="-", max="+", count=1, idle=self._min_idle_ms
            )
            if pending:
                return True
        return False

    async def _read_new(
        self, *, block_ms: int | None
    ) -> list[list[StreamEntry]] | None:
        """One XREADGROUP over all streams; None when stopped while blocked."""
        read = asyncio.ensure_future(
            self._client.xreadgroup(
                self._group,
                self._consumer,
                streams=dict.fromkeys(self._streams, ">"),
                count=self._count,
                block=block_ms,
            )
        )
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not read.done():
            # Entries the server hands out after this point stay pending for
            # this consumer, and XAUTOCLAIM recovers them later.
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await read
            return None
        try:
            response = read.result()
        except RedisTimeoutError:
            if block_ms is None:
                raise
            # The client's socket timeout (5 s by default since redis-py 8)
            # can end a blocking read before the server's empty answer comes:
            # nothing new arrived meanwhile. Whatever the server handed out
            # just then stays pending for this consumer; XAUTOCLAIM recovers it.
            log.debug("blocking read timed out", block_ms=block_ms)
            return []
        batches = []
        for stream, raw_entries in _stream_pairs(response):
            batch = await self._entries(_text(stream), raw_entries)
            if batch:
                batches.append(batch)
        return batches

    async def _entries(self, stream: str, raw_entries: Any) -> list[StreamEntry]:
        entries = []
        foreign = []
        for entry_id, fields in raw_entries or ():
            if entry_id is None or fields is None:
                # Redis before 7.0 returns deleted entries as nils.
                continue
            record = _field(fields, RECORD_FIELD)
            if record is None:
                # Not written by our sink; it can never be delivered, and
                # leaving it pending would have it claimed again forever.
                log.error(
                    "stream entry without a record field; skipped",
                    stream=stream,
                    entry_id=_text(entry_id),
                )
                foreign.append(_text(entry_id))
                continue
            record_id = _field(fields, ID_FIELD)
            entries.append(
                StreamEntry(
                    stream,
                    _text(entry_id),
                    record,
                    self._kinds.get(stream, ""),
                    "" if record_id is None else _text(record_id),
                )
            )
        await self.ack(stream, foreign)
        return entries


def _stream_pairs(response: Any) -> list[tuple[Any, Any]]:
    """(stream, entries) pairs from XREADGROUP in either reply shape."""
    if not response:
        return []
    if isinstance(response, dict):
        return list(response.items())
    return [(stream, entries) for stream, entries in response]


def _field(fields: dict[Any, Any], name: bytes) -> bytes | None:
    value = fields.get(name)
    if value is None:
        value = fields.get(name.decode())
    if isinstance(value, str):
        return value.encode()
    return value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
