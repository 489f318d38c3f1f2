"""Where records go: the sink contract and its implementations.

``open_sink`` turns a sink URL from the command line or settings into a sink:

- ``file:DIR`` (or ``file:///abs/dir``): JSON Lines files, see ``FileSink``.
- ``redis://[:password@]host:port/db`` or ``rediss://...`` (TLS): Redis
  streams, see ``RedisStreamSink``.
- ``postgresql://user[:password]@host:port/db[?schema=NAME]`` (or
  ``postgres://``) and ``sqlite:PATH``: SQL tables, see ``SqlSink``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sinks.base import Sink, SinkRecord
from sinks.files import FileSink
from sinks.redis_streams import RedisStreamSink, stream_key
from sinks.sql import POSTGRES_SCHEMES, SQLITE_SCHEME, SqlSink
from sinks.urls import redact_url
from wire.models import ModelTable

__all__ = [
    "FileSink",
    "RedisStreamSink",
    "Sink",
    "SinkRecord",
    "SqlSink",
    "open_sink",
    "redact_url",
    "stream_key",
]

_FILE_SCHEME = "file:"
_REDIS_SCHEMES = ("redis://", "rediss://")


def open_sink(url: str, *, tables: Sequence[ModelTable] = ()) -> Sink:
    """The sink a URL names.

    Args:
        url: ``file:DIR`` (``file:./data/out``, ``file:///var/lib/out``),
            ``redis://host:port/db``, ``rediss://host:port/db``,
            ``postgresql://user@host:port/db?schema=NAME`` (or
            ``postgres://``) or ``sqlite:PATH``; a password goes in the URL
            (``redis://:pw@host:6379/0``, ``postgresql://u:pw@host/db``).
        tables: the model tables whose rows the sink also takes.

    Returns:
        A new, open sink; close it (or use ``async with``) when done.

    Raises:
        ValueError: The URL names no supported sink.
    """
    if url.startswith(_FILE_SCHEME):
        path = url.removeprefix(_FILE_SCHEME)
        if path.startswith("//"):
            # file:///abs/dir has an empty authority; anything else there
            # (file://host/dir) names a remote host, which we cannot write to.
            authority, _, rest = path[2:].partition("/")
            if authority not in ("", "localhost"):
                raise ValueError(
                    f"sink URL {url!r}: file URLs cannot name a host "
                    f"({authority!r}); use file:DIR"
                )
            path = "/" + rest
        if not path:
            raise ValueError(
                f"sink URL {url!r}: no directory after 'file:'; "
                "use file:DIR, e.g. file:./data/out"
            )
        return FileSink(path, tables=tables)
    if url.startswith(_REDIS_SCHEMES):
        return RedisStreamSink(url, tables=tables)
    if url.startswith((*POSTGRES_SCHEMES, SQLITE_SCHEME)):
        return SqlSink(url, tables=tables)
    raise ValueError(
        f"unsupported sink URL {redact_url(url)!r}: expected file:DIR "
        "(e.g. file:./data/out), redis://host:port/db, rediss://host:port/db, "
        "postgresql://user@host:port/db (or postgres://) or sqlite:PATH "
        "(e.g. sqlite:./data/eventflow.db)"
    )
