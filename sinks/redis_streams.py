"""A sink that appends records to Redis streams, one stream per record kind.

Records of kind ``K`` go to the stream ``{prefix}:K`` (``eventflow:job.result``;
a model table's rows to ``eventflow:<table>``, ``eventflow:job_parts``)
as entries with two fields: ``id`` (the record id) and ``record`` (the JSON
body, byte for byte what the file sink writes on a line). ``sinks.consumer``
reads them back with a consumer group.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
import structlog

from sinks.base import Sink, SinkRecord, known_kinds, unknown_kind
from sinks.urls import redact_url
from wire.models import ModelTable

log = structlog.get_logger(__name__)

ID_FIELD = b"id"
RECORD_FIELD = b"record"
# Records per script call: big enough to amortise the round trip, small enough
# that one call does not hold Redis (single-threaded) for long.
CHUNK = 500

# KEYS come in pairs per record: stream key, id key. ARGV: ttl, maxlen (0 for
# none), then per record its id and body. It returns 1 per record added and 0
# per record already held, in order. The script is atomic, so no other
# writer can slip between the SET and the XADD. When XADD fails (the stream
# key holds another type, out of memory) the id is released again: otherwise a
# retry would skip a record that was never stored.
_WRITE_SCRIPT = """
local ttl = ARGV[1]
local maxlen = tonumber(ARGV[2])
local added = {}
for i = 1, #KEYS / 2 do
  added[i] = 0
  local id_key = KEYS[2 * i]
  if redis.call('SET', id_key, '1', 'NX', 'EX', ttl) then
    local entry
    if maxlen > 0 then
      entry = redis.pcall('XADD', KEYS[2 * i - 1], 'MAXLEN', '~', maxlen, '*',
                          'id', ARGV[1 + 2 * i], 'record', ARGV[2 + 2 * i])
    else
      entry = redis.pcall('XADD', KEYS[2 * i - 1], '*',
                          'id', ARGV[1 + 2 * i], 'record', ARGV[2 + 2 * i])
    end
    if type(entry) == 'table' and entry.err then
      redis.call('DEL', id_key)
      return entry
    end
    added[i] = 1
  end
end
return added
"""


def stream_key(prefix: str, kind: str) -> str:
    """The stream that holds records of ``kind``: ``{prefix}:{kind}``."""
    return f"{prefix}:{kind}"


def id_key(prefix: str, kind: str, record_id: str) -> str:
    """The key whose presence says ``record_id`` was written (it expires)."""
    return f"{prefix}:id:{kind}:{record_id}"


class RedisStreamSink(Sink):
    """Redis streams, exactly once per record id within the id TTL.

    Guarantee: when ``write`` returns, every record is in its kind's stream (as
    durable as the server's persistence settings make it) and no record id was
    added twice, across retries and concurrent writers in any process, as long
    as the retry comes within ``id_ttl_s`` of the first write. Each record
    costs one marker key ``{prefix}:id:{kind}:{record_id}`` that expires after
    ``id_ttl_s``.

    The keys of one script call span several hash slots, so this works on a
    single Redis server (or a primary with replicas), not on Redis Cluster.

    Args:
        url: ``redis://[:password@]host:port/db`` or ``rediss://...`` for TLS.
        prefix: Namespace of the stream and marker keys.
        id_ttl_s: How long a record id is remembered, in seconds.
        maxlen: Trim each stream to about this many entries (``MAXLEN ~``);
            ``None`` keeps everything.
        tables: the model tables whose rows it also takes, one stream each.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "eventflow",
        id_ttl_s: int = 7 * 24 * 3600,
        maxlen: int | None = None,
        tables: Sequence[ModelTable] = (),
    ) -> None:
        self._kinds = known_kinds(tables)
        if id_ttl_s <= 0:
            raise ValueError(f"id_ttl_s must be positive, got {id_ttl_s}")
        if maxlen is not None and maxlen <= 0:
            raise ValueError(f"maxlen must be positive or None, got {maxlen}")
        self._prefix = prefix
        self._id_ttl_s = id_ttl_s
        self._maxlen = maxlen
        self._redacted_url = redact_url(url)
        self._client: aioredis.Redis = aioredis.from_url(url)
        self._script = self._client.register_script(_WRITE_SCRIPT)
        log.info("redis sink opened", url=self._redacted_url, prefix=prefix)

    @property
    def prefix(self) -> str:
        """The key namespace."""
        return self._prefix

    @property
    def client(self) -> aioredis.Redis:
        """The underlying client, shared with whoever needs the same server."""
        return self._client

    def __repr__(self) -> str:
        return f"RedisStreamSink({self._redacted_url!r}, prefix={self._prefix!r})"

    async def write(self, records: Sequence[SinkRecord]) -> int:
        """Add the records whose ids are not held yet to their streams.

        Args:
            records: Records of any kinds, in any order; duplicates allowed.

        Returns:
            How many records were added (the rest were already held).

        Raises:
            ValueError: A record has an unknown kind.
            redis.RedisError: The server failed or could not be reached. Every
                chunk is atomic, so retrying the same records is safe.
        """
        for record in records:
            if record.kind not in self._kinds:
                raise unknown_kind(record.kind, self._kinds)
        added = 0
        maxlen = self._maxlen or 0
        for start in range(0, len(records), CHUNK):
            chunk = records[start : start + CHUNK]
            keys: list[str] = []
            args: list[str | bytes | int] = [self._id_ttl_s, maxlen]
            for record in chunk:
                keys.append(stream_key(self._prefix, record.kind))
                keys.append(id_key(self._prefix, record.kind, record.record_id))
                args.append(record.record_id)
                args.append(record.body)
            flags = await self._script(keys=keys, args=args)
            fresh = [r for r, flag in zip(chunk, flags, strict=True) if int(flag)]
            self._written(fresh)
            added += len(fresh)
        return added

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
