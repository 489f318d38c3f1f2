"""A sink that appends records to JSON Lines files, one file per record kind.

Records of kind ``K`` go to ``{directory}/K.jsonl`` (``job.result.jsonl``,
``tenant.summary.jsonl``, ``dead_letter.jsonl``, and ``<table>.jsonl`` per
model table such as ``job_parts.jsonl``), one compact JSON object per line,
exactly ``SinkRecord.body`` followed by ``b"\\n"``.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import structlog

from sinks.base import Sink, SinkRecord, known_kinds, unknown_kind
from wire.models import ModelTable

log = structlog.get_logger(__name__)

_NEWLINE = b"\n"
# Big enough to keep syscalls few when catching up, small enough that a large
# file is never read into memory at once.
_READ_CHUNK = 1 << 20


class _JobResultId(msgspec.Struct):
    result_id: str


class _TenantSummaryId(msgspec.Struct):
    summary_id: str


class _DeadLetterId(msgspec.Struct):
    dead_letter_id: str


# Decoding only the id field skips building the whole record, which matters
# when a new process catches up on a large existing file.
_ID_DECODERS: dict[str, msgspec.json.Decoder[msgspec.Struct]] = {
    "job.result": msgspec.json.Decoder(_JobResultId),
    "tenant.summary": msgspec.json.Decoder(_TenantSummaryId),
    "dead_letter": msgspec.json.Decoder(_DeadLetterId),
}
_ID_FIELDS = {
    "job.result": "result_id",
    "tenant.summary": "summary_id",
    "dead_letter": "dead_letter_id",
}


def _record_id_reader(kind: str) -> Callable[[bytes], str]:
    decoder = _ID_DECODERS[kind]
    field = _ID_FIELDS[kind]
    return lambda line: getattr(decoder.decode(line), field)


class _KindFile:
    """One kind's file: its descriptor, the ids it holds and how far we read."""

    def __init__(self, kind: str, path: Path, id_of: Callable[[bytes], str]) -> None:
        self.kind = kind
        self.path = path
        # A line's record id, read back when catching up.
        self.id_of = id_of
        self.fd: int | None = None
        # Guards this object across the threads asyncio.to_thread uses; flock
        # alone would serialise the file but not our index and offset.
        self.lock = threading.Lock()
        self.ids: set[str] = set()
        # Everything before ``offset`` has been read into ``ids``.
        self.offset = 0


class FileSink(Sink):
    """JSON Lines files, exactly once per record id, safe across processes.

    Guarantee: when ``write`` returns, every record passed to it is in its
    kind's file, fsynced (unless ``fsync=False``), on a whole line of its own,
    and no record id appears twice in a file, even when several worker
    processes write the same directory at once and retry failed writes. The
    first body written for an id wins.

    How: each write takes an exclusive ``flock`` on the kind's file, repairs a
    torn last line a crashed writer left behind, reads what other processes
    appended since this process last looked to learn their ids, appends only
    the records with new ids in one buffer, fsyncs and releases the lock.

    Cost: every write of a kind is serialised across processes by the lock and
    pays one fsync. Each instance keeps the id of every record in the files in
    memory (about 100 bytes per id), and a new instance reads the whole file
    once on its first write to each kind. Rotation and compaction are out of
    scope: the files and the index only grow.

    Args:
        directory: Where the files live; created if missing.
        fsync: fsync the file (and the directory when a file is created)
            before ``write`` returns. Turn off only where durability does not
            matter, such as benchmarks.
        tables: the model tables whose rows it also takes, one file each.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: bool = True,
        tables: Sequence[ModelTable] = (),
    ) -> None:
        self._directory = Path(directory)
        self._fsync = fsync
        self._kinds = known_kinds(tables)
        self._files = {
            kind: _KindFile(
                kind,
                self._directory / f"{kind}.jsonl",
                _record_id_reader(kind) if table is None else table.record_id,
            )
            for kind, table in self._kinds.items()
        }
        self._closed = False

    @property
    def directory(self) -> Path:
        """The directory holding the ``{kind}.jsonl`` files."""
        return self._directory

    def path(self, kind: str) -> Path:
        """The file that holds records of ``kind``."""
        return self._kind_file(kind).path

    async def write(self, records: Sequence[SinkRecord]) -> int:
        """Append the records whose ids the files do not hold yet.

        Args:
            records: Records of any kinds, in any order; duplicates allowed.

        Returns:
            How many records were written (the rest were already held).

        Raises:
            ValueError: A record has an unknown kind or a body with a newline.
            RuntimeError: The sink is closed.
            OSError: The file system failed; nothing of the failed kind is
                left half-written, so retrying the same records is safe.
        """
        if self._closed:
            raise RuntimeError("FileSink is closed")
        by_kind: dict[str, list[SinkRecord]] = {}
        for record in records:
            kind_file = self._kind_file(record.kind)
            if _NEWLINE in record.body:
                raise ValueError(
                    f"record {record.kind}/{record.record_id}: body contains a "
                    "newline, which would split it across lines"
                )
            by_kind.setdefault(kind_file.kind, []).append(record)
        if not by_kind:
            return 0
        return await asyncio.to_thread(self._write_all, by_kind)

    async def close(self) -> None:
        """Close the file descriptors; further writes raise RuntimeError."""
        self._closed = True
        await asyncio.to_thread(self._close_all)

    def _kind_file(self, kind: str) -> _KindFile:
        try:
            return self._files[kind]
        except KeyError:
            # The kind becomes a file name: an unknown one could escape the
            # directory.
            raise unknown_kind(kind, self._kinds) from None

    def _write_all(self, by_kind: dict[str, list[SinkRecord]]) -> int:
        # One lock at a time, never nested, so two writers cannot deadlock.
        return sum(
            self._write_kind(self._files[kind], batch)
            for kind, batch in by_kind.items()
        )

    def _write_kind(self, kind_file: _KindFile, batch: list[SinkRecord]) -> int:
        with kind_file.lock:
            if self._closed:
                raise RuntimeError("FileSink is closed")
            fd = self._open(kind_file)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = _repair_torn_tail(fd, kind_file.path)
                self._catch_up(kind_file, fd, size)
                fresh: list[SinkRecord] = []
                seen: set[str] = set()
                for record in batch:
                    if record.record_id in kind_file.ids or record.record_id in seen:
                        continue
                    seen.add(record.record_id)
                    fresh.append(record)
                if not fresh:
                    return 0
                buffer = b"".join(record.body + _NEWLINE for record in fresh)
                try:
                    _write_fully(fd, buffer)
                    if self._fsync:
                        os.fsync(fd)
                except BaseException:
                    # Take back a partial append so the retry's records are not
                    # mistaken for already written ones when we catch up.
                    _truncate_quietly(fd, size, kind_file.path)
                    raise
                kind_file.ids.update(seen)
                kind_file.offset = size + len(buffer)
                self._written(fresh)
                return len(fresh)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self, kind_file: _KindFile) -> int:
        if kind_file.fd is not None:
            return kind_file.fd
        self._directory.mkdir(parents=True, exist_ok=True)
        created = not kind_file.path.exists()
        # O_RDWR because catching up reads and repairing truncates; O_APPEND so
        # every write lands at the end whatever another process did.
        kind_file.fd = os.open(
            kind_file.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
        )
        if created and self._fsync:
            # The new file's directory entry must survive a crash too.
            dir_fd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        log.debug("sink file opened", path=str(kind_file.path), created=created)
        return kind_file.fd

    def _catch_up(self, kind_file: _KindFile, fd: int, size: int) -> None:
        if size < kind_file.offset:
            # Someone truncated or replaced the file behind our back (rotation is
            # out of scope). Re-read it all; keeping the old ids errs toward
            # skipping over writing twice.
            log.warning(
                "sink file shrank",
                path=str(kind_file.path),
                offset=kind_file.offset,
                size=size,
            )
            kind_file.offset = 0
        if size == kind_file.offset:
            return
        id_of = kind_file.id_of
        position = kind_file.offset
        pending = b""
        bad_lines = 0
        while position < size:
            chunk = os.pread(fd, min(_READ_CHUNK, size - position), position)
            if not chunk:
                break
            position += len(chunk)
            lines = (pending + chunk).split(_NEWLINE)
            pending = lines.pop()
            for line in lines:
                if not line:
                    continue
                try:
                    kind_file.ids.add(id_of(line))
                except msgspec.DecodeError:
                    bad_lines += 1
        if bad_lines:
            # Not fatal: the line is someone else's damage, and refusing every
            # later write would turn one bad line into an outage.
            log.warning(
                "sink file has unreadable lines",
                path=str(kind_file.path),
                count=bad_lines,
            )
        # The tail was repaired under the same lock, so the file ends in a
        # newline and ``pending`` is empty.
        kind_file.offset = position - len(pending)

    def _close_all(self) -> None:
        for kind_file in self._files.values():
            with kind_file.lock:
                if kind_file.fd is not None:
                    os.close(kind_file.fd)
                    kind_file.fd = None


def _repair_torn_tail(fd: int, path: Path) -> int:
    """Cut a partial last line left by a crashed writer; returns the new size.

    Must be called with the file locked: only then is a missing final newline
    a crash's leftover rather than a write in progress.
    """
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == _NEWLINE:
        return size
    end = size
    keep = 0
    while end > 0:
        start = max(0, end - _READ_CHUNK)
        newline = os.pread(fd, end - start, start).rfind(_NEWLINE)
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    os.ftruncate(fd, keep)
    os.fsync(fd)
    log.warning(
        "sink file had a torn last line; truncated it",
        path=str(path),
        removed_bytes=size - keep,
    )
    return keep


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _truncate_quietly(fd: int, size: int, path: Path) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        # The original error matters more; the torn-tail repair and catch-up of
        # the next write cope with whatever is left.
        log.exception("could not take back a failed append", path=str(path))
