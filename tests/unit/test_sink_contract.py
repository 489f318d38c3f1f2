"""The sink contract (``sinks.base``) run against every sink, and each sink's own tests.

``SinkContract`` holds the behaviour every sink must show; ``TestFileSink`` and
``TestRedisStreamSink`` plug in a sink and a way to read back what it holds.
Redis tests use a real ``redis-server`` (``tests.support.redis``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest
import redis
import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from sinks import (
    FileSink,
    RedisStreamSink,
    Sink,
    SinkRecord,
    SqlSink,
    fanout,
    open_sink,
    redact_url,
)
from sinks.fanout import FanOutSink, SinkWriteFailed
from sinks.redis_streams import ID_FIELD, RECORD_FIELD, id_key, stream_key
from tests.support.processes import ROOT
from tests.support.sinks import FailingSink, SinkFactory
from tests.support.sql import read_tables
from wire.records import (
    RECORD_KINDS,
    DeadLetter,
    JobResult,
    Record,
    TenantSummary,
    decode_record,
    record_id,
    record_kind,
)

if TYPE_CHECKING:
    # Imported only for hints: importing the plugin module before pytest loads
    # it would keep pytest from rewriting its asserts.
    from tests.support.postgres import PostgresServer
    from tests.support.redis import RedisServer


ReadBack = Callable[[], Awaitable[dict[str, list[Record]]]]


def job_result(n: int, *, events: int = 3) -> JobResult:
    return JobResult(
        result_id=f"t1/job-{n}/1",
        tenant_id="t1",
        job_id=f"job-{n}",
        version=1,
        status="complete",
        events=events,
        analyses={"ocr": {"text": f"page {n}", "confidence": 0.5}},
        required=["ocr"],
        missing={},
        opened_at="2025-01-01T00:00:00Z",
        completed_at="2025-01-01T00:01:00Z",
    )


def tenant_summary(n: int) -> TenantSummary:
    return TenantSummary(
        summary_id=f"t{n}/2025-01-01T00:00:00Z",
        tenant_id=f"t{n}",
        window_start="2025-01-01T00:00:00Z",
        window_end="2025-01-01T01:00:00Z",
        jobs_completed=n,
        jobs_timed_out=0,
        jobs_amended=1,
        events=10 * n,
        analyses={"ocr": n},
        dead_letters=0,
    )


def dead_letter(n: int) -> DeadLetter:
    return DeadLetter(
        dead_letter_id=f"dl-{n}",
        reason="payload is not JSON",
        source="edge",
        raw='{"broken": "line\\nbreak" ' + "x" * n,
        tenant_id="t1",
        at="2025-01-01T00:00:00Z",
    )


def mixed_records(count: int, *, start: int = 0) -> list[Record]:
    """``count`` records cycling through the three kinds, ids unique per n."""
    builders = (job_result, tenant_summary, dead_letter)
    return [builders[n % 3](n) for n in range(start, start + count)]


def sink_records(records: list[Record]) -> list[SinkRecord]:
    return [SinkRecord.of(record) for record in records]


def by_kind(records: list[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = {kind: [] for kind in RECORD_KINDS}
    for record in records:
        grouped[record_kind(record)].append(record)
    return grouped


def assert_each_id_once(held: dict[str, list[Record]]) -> None:
    for kind, records in held.items():
        ids = [record_id(record) for record in records]
        assert len(ids) == len(set(ids)), f"duplicate ids in {kind}"


class SinkContract(SinkFactory):
    """Behaviour every sink must show.

    Subclasses provide the ``make_sink`` and ``read_back`` fixtures.
    """

    @pytest.fixture
    def read_back(self) -> ReadBack:
        """Everything the store holds, decoded, per kind, in stored order."""
        raise NotImplementedError("a sink test class must provide read_back")

    async def test_written_records_read_back_equal(
        self, sink: Sink, read_back: ReadBack
    ) -> None:
        records = mixed_records(12)

        assert await sink.write(sink_records(records)) == 12

        assert await read_back() == by_kind(records)

    async def test_empty_write_returns_zero(
        self, sink: Sink, read_back: ReadBack
    ) -> None:
        assert await sink.write([]) == 0
        assert await read_back() == by_kind([])

    async def test_retrying_a_batch_adds_nothing(
        self, sink: Sink, read_back: ReadBack
    ) -> None:
        batch = sink_records(mixed_records(9))
        await sink.write(batch)

        assert await sink.write(batch) == 0

        assert await read_back() == by_kind(mixed_records(9))

    async def test_observers_see_each_record_stored_once(self, sink: Sink) -> None:
        seen: list[tuple[str, str]] = []
        sink.observe(
            lambda records: seen.extend((r.kind, r.record_id) for r in records)
        )
        first = sink_records(mixed_records(6))
        await sink.write(first)
        await sink.write(first + sink_records(mixed_records(3, start=6)))

        assert sorted(seen) == sorted(
            (r.kind, r.record_id) for r in sink_records(mixed_records(9))
        )

    async def test_retry_with_some_new_records_writes_only_those(
        self, sink: Sink, read_back: ReadBack
    ) -> None:
        await sink.write(sink_records(mixed_records(6)))

        assert await sink.write(sink_records(mixed_records(9))) == 3

        assert await read_back() == by_kind(mixed_records(9))

    async def test_duplicate_ids_within_one_call_are_written_once(
        self, sink: Sink, read_back: ReadBack
    ) -> None:
        records = mixed_records(3)

        assert await sink.write(sink_records(records + records + records[:1])) == 3

        assert await read_back() == by_kind(records)

    async def test_same_id_with_another_body_is_not_written_again(
        self, sink: Sink, read_back: ReadBack
    ) -> None:
        """The first body written for an id wins."""
        first, second = job_result(1, events=3), job_result(1, events=99)
        await sink.write([SinkRecord.of(first)])

        assert await sink.write([SinkRecord.of(second)]) == 0

        assert (await read_back())["job.result"] == [first]

    async def test_each_kind_goes_to_its_own_place(
        self, sink: Sink, read_back: ReadBack
    ) -> None:
        await sink.write(
            sink_records(
                [dead_letter(1), job_result(2), tenant_summary(3), job_result(4)]
            )
        )

        held = await read_back()

        assert {
            kind: [record_id(r) for r in records] for kind, records in held.items()
        } == {
            "job.result": ["t1/job-2/1", "t1/job-4/1"],
            "tenant.summary": ["t3/2025-01-01T00:00:00Z"],
            "dead_letter": ["dl-1"],
        }

    async def test_same_ids_in_different_kinds_do_not_collide(
        self, sink: Sink, read_back: ReadBack
    ) -> None:
        """Ids are unique per kind; a job result and a dead letter may share one."""
        records = [
            SinkRecord("job.result", "same", SinkRecord.of(job_result(1)).body),
            SinkRecord("dead_letter", "same", SinkRecord.of(dead_letter(1)).body),
        ]

        assert await sink.write(records) == 2

    async def test_a_new_sink_over_the_same_store_skips_held_ids(
        self, new_sink: Callable[[], Sink], read_back: ReadBack
    ) -> None:
        await new_sink().write(sink_records(mixed_records(6)))

        assert await new_sink().write(sink_records(mixed_records(8))) == 2

        assert await read_back() == by_kind(mixed_records(8))

    async def test_concurrent_writes_lose_nothing_and_duplicate_nothing(
        self, new_sink: Callable[[], Sink], read_back: ReadBack
    ) -> None:
        """Many tasks over two sink instances write overlapping batches at once."""
        records = sink_records(mixed_records(90))
        sinks = [new_sink(), new_sink()]

        async def write(task: int) -> int:
            # Overlapping windows: every record is offered by several tasks.
            start = (task * 7) % 80
            return await sinks[task % 2].write(records[start : start + 25])

        written = await asyncio.gather(*(write(task) for task in range(30)))

        held = await read_back()
        assert_each_id_once(held)
        offered = {
            (r.kind, r.record_id)
            for task in range(30)
            for r in records[(task * 7) % 80 :][:25]
        }
        assert {
            (record_kind(r), record_id(r)) for records in held.values() for r in records
        } == offered
        assert sum(written) == len(offered)

    async def test_unknown_kind_is_rejected(self, sink: Sink) -> None:
        with pytest.raises(
            ValueError, match=r"unknown record kind 'job\.result/\.\./x'"
        ):
            await sink.write([SinkRecord("job.result/../x", "1", b"{}")])


class TestFileSink(SinkContract):
    @pytest.fixture
    def directory(self, tmp_path: Path) -> Path:
        return tmp_path / "out"

    @pytest.fixture
    def make_sink(self, directory: Path) -> Callable[[], Sink]:
        return lambda: FileSink(directory)

    @pytest.fixture
    def read_back(self, directory: Path) -> ReadBack:
        async def read() -> dict[str, list[Record]]:
            return {
                kind: [
                    decode_record(line)
                    for line in read_lines(directory / f"{kind}.jsonl")
                ]
                for kind in RECORD_KINDS
            }

        return read

    async def test_lines_are_the_record_bodies(
        self, sink: FileSink, directory: Path
    ) -> None:
        records = sink_records([job_result(1), job_result(2)])
        await sink.write(records)

        assert (directory / "job.result.jsonl").read_bytes() == b"".join(
            r.body + b"\n" for r in records
        )

    async def test_a_torn_last_line_is_cut_and_the_next_write_is_whole(
        self, sink: FileSink, directory: Path, read_back: ReadBack
    ) -> None:
        await sink.write(sink_records([job_result(1), job_result(2)]))
        path = directory / "job.result.jsonl"
        # What a writer that crashed halfway through its append leaves behind.
        with path.open("ab") as file:
            file.write(SinkRecord.of(job_result(3)).body[:40])

        assert await sink.write(sink_records([job_result(3), job_result(4)])) == 2

        assert path.read_bytes().endswith(b"\n")
        assert (await read_back())["job.result"] == [
            job_result(n) for n in (1, 2, 3, 4)
        ]

    async def test_a_file_of_only_a_torn_line_is_emptied_first(
        self, new_sink: Callable[[], Sink], directory: Path, read_back: ReadBack
    ) -> None:
        torn = b'{"type":"dead_letter","dead_letter_id":"dl-'
        await asyncio.to_thread(directory.mkdir)
        await asyncio.to_thread((directory / "dead_letter.jsonl").write_bytes, torn)

        assert await new_sink().write(sink_records([dead_letter(1)])) == 1

        assert (await read_back())["dead_letter"] == [dead_letter(1)]

    async def test_a_body_with_a_newline_is_rejected(self, sink: FileSink) -> None:
        with pytest.raises(ValueError, match="newline"):
            await sink.write([SinkRecord("job.result", "1", b'{"a":\n1}')])

    async def test_the_directory_is_created(self, tmp_path: Path) -> None:
        directory = tmp_path / "a" / "b"
        async with FileSink(directory) as sink:
            await sink.write(sink_records([job_result(1)]))

        assert (directory / "job.result.jsonl").is_file()

    async def test_a_closed_sink_refuses_writes(self, sink: FileSink) -> None:
        await sink.close()

        with pytest.raises(RuntimeError, match="closed"):
            await sink.write(sink_records([job_result(1)]))

    def test_processes_writing_one_directory_write_each_id_once(
        self, directory: Path, tmp_path: Path
    ) -> None:
        """Three OS processes write overlapping ids at once, then retry them all."""
        go = tmp_path / "go"
        ranges = [(0, 120), (40, 160), (80, 200)]
        writers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WRITER,
                    str(directory),
                    str(go),
                    str(first),
                    str(last),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for first, last in ranges
        ]
        try:
            # A barrier, so the writes overlap in time rather than in turn.
            for writer in writers:
                assert writer.stdout is not None
                assert writer.stdout.readline().strip() == "ready"
            go.touch()
            outputs = [writer.communicate(timeout=30)[0] for writer in writers]
        finally:
            for writer in writers:
                writer.kill()
        assert [writer.returncode for writer in writers] == [0, 0, 0]

        # decode_record also proves every line is one whole, valid record.
        ids = [
            record_id(decode_record(line))
            for kind in RECORD_KINDS
            for line in read_lines(directory / f"{kind}.jsonl")
        ]
        assert sorted(ids) == sorted(
            f"dl-{n}" if n % 2 else f"t1/job-{n}/1" for n in range(200)
        )
        # The last line is the count; structlog's default logger prints above it.
        assert sum(int(output.splitlines()[-1]) for output in outputs) == 200


# Run by each writer process: builds records for ids [first, last), waits for
# the go file, writes them in small batches, then retries the whole lot.
_WRITER = """
import asyncio, sys, time
from pathlib import Path
from sinks import FileSink, SinkRecord
from wire.records import DeadLetter, JobResult

directory, go = sys.argv[1], Path(sys.argv[2])
first, last = int(sys.argv[3]), int(sys.argv[4])
AT = "2025-01-01T00:00:00Z"


def record(n):
    if n % 2:
        return DeadLetter(
            dead_letter_id=f"dl-{n}", reason="r", source="edge", raw="x" * n, at=AT
        )
    return JobResult(
        result_id=f"t1/job-{n}/1", tenant_id="t1", job_id=f"job-{n}", version=1,
        status="complete", events=1, analyses={"n": n}, required=None, missing={},
        opened_at=None, completed_at=AT,
    )


async def main():
    records = [SinkRecord.of(record(n)) for n in range(first, last)]
    sink = FileSink(directory)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    written = 0
    for start in range(0, len(records), 4):
        written += await sink.write(records[start : start + 4])
    written += await sink.write(records)
    await sink.close()
    print(written, flush=True)


asyncio.run(main())
"""


def read_lines(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends in a torn line"
    return data.splitlines()


class TestRedisStreamSink(SinkContract):
    @pytest.fixture
    def make_sink(self, redis_url: str) -> Callable[[], Sink]:
        return lambda: RedisStreamSink(redis_url, id_ttl_s=600)

    @pytest.fixture
    def read_back(self, redis_url: str) -> ReadBack:
        async def read() -> dict[str, list[Record]]:
            return read_streams(redis_url)

        return read

    async def test_entries_carry_the_id_and_the_body(
        self, sink: Sink, redis_url: str
    ) -> None:
        record = SinkRecord.of(job_result(1))
        await sink.write([record])

        with redis.Redis.from_url(redis_url) as client:
            [(_, fields)] = client.xrange(stream_key("eventflow", "job.result"))

        assert fields == {ID_FIELD: b"t1/job-1/1", RECORD_FIELD: record.body}

    async def test_id_keys_expire_after_the_ttl(self, redis_url: str) -> None:
        async with RedisStreamSink(redis_url, id_ttl_s=120) as sink:
            await sink.write(sink_records([job_result(1), dead_letter(2)]))

        with redis.Redis.from_url(redis_url) as client:
            ttls = [
                client.ttl(id_key("eventflow", "job.result", "t1/job-1/1")),
                client.ttl(id_key("eventflow", "dead_letter", "dl-2")),
            ]
        assert all(0 < ttl <= 120 for ttl in ttls), ttls

    async def test_the_prefix_namespaces_the_keys(self, redis_url: str) -> None:
        async with RedisStreamSink(redis_url, prefix="other") as sink:
            await sink.write(sink_records([job_result(1)]))

        with redis.Redis.from_url(redis_url) as client:
            assert client.xlen("other:job.result") == 1
            assert not client.exists("eventflow:job.result")

    async def test_maxlen_trims_the_streams(self, redis_url: str) -> None:
        async with RedisStreamSink(redis_url, maxlen=10) as sink:
            assert (
                await sink.write(sink_records([job_result(n) for n in range(600)]))
                == 600
            )

        with redis.Redis.from_url(redis_url) as client:
            # MAXLEN ~ trims whole stream nodes (100 entries each), so not exactly 10.
            assert client.xlen("eventflow:job.result") < 600

    async def test_a_password_in_the_url_works_and_is_never_logged(
        self, start_redis: Callable[..., RedisServer]
    ) -> None:
        password = "s3cret-Pa55word"
        server = start_redis(password=password)
        with structlog.testing.capture_logs() as logs:
            sink = RedisStreamSink(server.url)
            assert await sink.write(sink_records([job_result(1)])) == 1
            await sink.close()
            assert password not in repr(sink)

        assert password not in repr(logs)
        assert any(
            f"redis://:***@127.0.0.1:{server.port}/0" in repr(entry) for entry in logs
        )
        with server.client() as client:
            assert client.xlen("eventflow:job.result") == 1
        async with RedisStreamSink(f"redis://127.0.0.1:{server.port}/0") as anonymous:
            with pytest.raises(redis.exceptions.AuthenticationError):
                await anonymous.write(sink_records([job_result(2)]))


def read_streams(url: str, prefix: str = "eventflow") -> dict[str, list[Record]]:
    with redis.Redis.from_url(url) as client:
        return {
            kind: [
                decode_record(fields[RECORD_FIELD])
                for _, fields in client.xrange(stream_key(prefix, kind))
            ]
            for kind in RECORD_KINDS
        }


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://user:pw@host/1", "rediss://user:***@host/1"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
        ("redis://:pw@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("postgresql://u:pw@host:5432/db", "postgresql://u:***@host:5432/db"),
        ("postgres://u:pw@host/db?schema=s", "postgres://u:***@host/db?schema=s"),
        ("postgresql://u@host/db?password=pw", "postgresql://u@host/db?password=***"),
        ("postgresql://u@host:5432/db", "postgresql://u@host:5432/db"),
        ("sqlite:./data/eventflow.db", "sqlite:./data/eventflow.db"),
        (
            "postgresql:///db?host=/run&password=pw",
            "postgresql:///db?host=/run&password=***",
        ),
        ("postgresql://u@h/db?sslpassword=pw", "postgresql://u@h/db?sslpassword=***"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pa/pw@host/db",
        "postgresql://u:12/34pw@host:5432/db",
        "redis://:pa?pw@host:6379/0",
        "postgres://u:pa#pw@host/db",
    ],
)
def test_redact_url_hides_a_password_with_an_unencoded_delimiter(url: str) -> None:
    """A ``/``, ``?`` or ``#`` in the password ends the authority early; all up
    to the last ``@`` is hidden then."""
    assert "pw" not in redact_url(url)
    assert redact_url(url).endswith(url.rpartition("@")[2])


class TestOpenSink:
    async def test_file_url_opens_a_file_sink(self, tmp_path: Path) -> None:
        async with open_sink(f"file:{tmp_path}/out") as sink:
            assert isinstance(sink, FileSink)
            assert sink.directory == tmp_path / "out"

    async def test_file_url_with_an_empty_authority_is_an_absolute_path(
        self, tmp_path: Path
    ) -> None:
        async with open_sink(f"file://{tmp_path}") as sink:
            assert isinstance(sink, FileSink)
            assert sink.directory == tmp_path

    @pytest.mark.parametrize("scheme", ["redis", "rediss"])
    async def test_redis_urls_open_a_stream_sink(self, scheme: str) -> None:
        # Constructing connects lazily, so no server is needed here.
        async with open_sink(f"{scheme}://127.0.0.1:6379/0") as sink:
            assert isinstance(sink, RedisStreamSink)

    @pytest.mark.parametrize(
        "url",
        ["sqlite:./data/eventflow.db", "postgresql://u@h/db", "postgres://u@h/db"],
    )
    async def test_sql_urls_open_an_sql_sink(self, url: str) -> None:
        # The engine connects lazily, so no server is needed here.
        async with open_sink(url) as sink:
            assert isinstance(sink, SqlSink)

    def test_the_refusal_lists_every_supported_scheme(self) -> None:
        with pytest.raises(ValueError, match="unsupported sink URL") as error:
            open_sink("kafka://broker:9092")
        for scheme in ("file:", "redis://", "rediss://", "postgresql://"):
            assert scheme in str(error.value)
        assert "postgres://" in str(error.value)
        assert "sqlite:" in str(error.value)

    @pytest.mark.parametrize(
        "url",
        [
            "",
            "file:",
            "./out",
            "kafka://broker:9092",
            "file://otherhost/out",
            "sqlite:",
        ],
    )
    def test_anything_else_is_refused(self, url: str) -> None:
        with pytest.raises(ValueError, match="sink URL"):
            open_sink(url)

    def test_the_refusal_does_not_repeat_a_password(self) -> None:
        with pytest.raises(ValueError, match="unsupported sink URL") as error:
            open_sink("http://:hunter2@host/")
        assert "hunter2" not in str(error.value)


class SqlSinkContract(SinkContract):
    """The contract over an SQL database; subclasses give its URL."""

    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError("an SQL sink test class must provide url")

    @pytest.fixture
    def make_sink(self, url: str) -> Callable[[], Sink]:
        return lambda: SqlSink(url)

    @pytest.fixture
    def read_back(self, url: str) -> ReadBack:
        return lambda: read_tables(url)

    async def test_jobs_current_holds_the_latest_version_of_each_job(
        self, sink: SqlSink
    ) -> None:
        def version(n: int, v: int) -> JobResult:
            return msgspec.structs.replace(
                job_result(n),
                result_id=f"t1/job-{n}/{v}",
                version=v,
                status="complete" if v == 1 else "amended",
                events=v,
            )

        await sink.write(sink_records([version(1, 1), version(2, 1), version(1, 3)]))
        await sink.write(sink_records([version(1, 2)]))

        async with sink.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    f"SELECT result_id, events FROM {qualified(sink, 'jobs_current')} "
                    "ORDER BY result_id"
                )
            )
            assert [tuple(row) for row in rows] == [
                ("t1/job-1/3", 3),
                ("t1/job-2/1", 1),
            ]

    async def test_json_columns_take_any_json_and_none_is_sql_null(
        self, sink: SqlSink, read_back: ReadBack
    ) -> None:
        """A pipeline may return a scalar; a job without job.opened has no
        ``required``, which SQL finds with ``IS NULL``."""
        record = msgspec.structs.replace(job_result(1), analyses=5, required=None)

        assert await sink.write([SinkRecord.of(record)]) == 1

        async with sink.engine.connect() as conn:
            nulls = await conn.execute(
                text(
                    f"SELECT count(*) FROM {qualified(sink, 'job_results')} "
                    "WHERE required IS NULL"
                )
            )
            assert nulls.scalar() == 1
        assert (await read_back())["job.result"] == [record]

    async def test_a_body_that_is_no_record_of_its_kind_is_refused(
        self, sink: SqlSink
    ) -> None:
        body = SinkRecord.of(dead_letter(1)).body

        with pytest.raises(
            ValueError, match=r"record job\.result/x: .* not a valid job\.result"
        ):
            await sink.write([SinkRecord("job.result", "x", body)])

    async def test_driver_errors_do_not_quote_the_rows(self, sink: SqlSink) -> None:
        """Rows carry payloads, which must stay out of errors and logs."""
        await sink.write(sink_records([job_result(1)]))
        cascade = " CASCADE" if sink.dialect == "postgresql" else ""
        async with sink.engine.begin() as conn:
            await conn.execute(
                text(f"DROP TABLE {qualified(sink, 'job_results')}{cascade}")
            )

        with pytest.raises(DBAPIError) as error:
            await sink.write(sink_records([job_result(2)]))

        assert "page 2" not in str(error.value)

    async def test_written_at_is_set_by_the_sink(self, sink: SqlSink) -> None:
        await sink.write(sink_records([job_result(1), dead_letter(2)]))

        async with sink.engine.connect() as conn:
            for table in ("job_results", "dead_letters"):
                [written_at] = (
                    await conn.execute(
                        text(f"SELECT written_at FROM {qualified(sink, table)}")
                    )
                ).scalars()
                assert written_at is not None

    def test_processes_writing_one_database_write_each_id_once(
        self, url: str, tmp_path: Path
    ) -> None:
        """Three OS processes write overlapping ids at once, then retry them all."""
        outputs = run_writers(_SQL_WRITER, url, tmp_path / "go")

        held = asyncio.run(read_tables(url))
        assert_each_id_once(held)
        ids = [record_id(r) for records in held.values() for r in records]
        assert sorted(ids) == sorted(
            f"dl-{n}" if n % 2 else f"t1/job-{n}/1" for n in range(200)
        )
        assert sum(int(output.splitlines()[-1]) for output in outputs) == 200


def qualified(sink: SqlSink, name: str) -> str:
    return f'"{sink.schema}"."{name}"' if sink.schema else f'"{name}"'


def run_writers(script: str, target: str, go: Path) -> list[str]:
    """Three processes run ``script`` over ids [0,120), [40,160), [80,200)."""
    ranges = [(0, 120), (40, 160), (80, 200)]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", script, target, str(go), str(first), str(last)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for first, last in ranges
    ]
    try:
        for writer in writers:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "ready"
        go.touch()
        outputs = [writer.communicate(timeout=60)[0] for writer in writers]
    finally:
        for writer in writers:
            writer.kill()
    assert [writer.returncode for writer in writers] == [0, 0, 0]
    return outputs


_SQL_WRITER = _WRITER.replace(
    "from sinks import FileSink,", "from sinks import SqlSink,"
).replace("sink = FileSink(directory)", "sink = SqlSink(directory)")


class TestSqliteSink(SqlSinkContract):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"sqlite:{tmp_path}/data/eventflow.db"

    async def test_columns_and_types(self, sink: SqlSink, tmp_path: Path) -> None:
        await sink.write(sink_records([job_result(1)]))

        async with sink.engine.connect() as conn:
            columns = {
                row[1]: row[2]
                for row in await conn.execute(text("PRAGMA table_info(job_results)"))
            }
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
        assert columns == {
            "result_id": "TEXT",
            "tenant_id": "TEXT",
            "job_id": "TEXT",
            "version": "INTEGER",
            "status": "TEXT",
            "events": "INTEGER",
            "required": "TEXT",
            "missing": "TEXT",
            "analyses": "TEXT",
            "opened_at": "TEXT",
            "completed_at": "TEXT",
            "written_at": "TEXT",
            "schema_version": "INTEGER",
        }
        assert journal == "wal"

    async def test_times_are_stored_as_the_rfc3339_text(self, sink: SqlSink) -> None:
        await sink.write(sink_records([job_result(1)]))

        async with sink.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT completed_at, missing FROM job_results")
                )
            ).one()
        assert tuple(row) == ("2025-01-01T00:01:00Z", "{}")

    async def test_json_is_stored_as_text(self, sink: SqlSink) -> None:
        """Even a scalar: a column declared JSON would turn ``5`` into 5."""
        record = msgspec.structs.replace(job_result(1), analyses=5)
        await sink.write([SinkRecord.of(record)])

        async with sink.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT analyses, typeof(analyses) FROM job_results")
                )
            ).one()
        assert tuple(row) == ("5", "text")


class TestPostgresSink(SqlSinkContract):
    @pytest.fixture
    def url(self, postgres_url: str) -> str:
        return postgres_url

    async def test_columns_and_types(self, sink: SqlSink) -> None:
        await sink.write(sink_records([job_result(1)]))

        async with sink.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT table_name, column_name, data_type "
                    "FROM information_schema.columns WHERE table_schema = 'eventflow'"
                )
            )
            columns: dict[str, dict[str, str]] = {}
            for table, column, data_type in rows:
                columns.setdefault(table, {})[column] = data_type
        assert columns["job_results"] == {
            "result_id": "text",
            "tenant_id": "text",
            "job_id": "text",
            "version": "integer",
            "status": "text",
            "events": "integer",
            "required": "jsonb",
            "missing": "jsonb",
            "analyses": "jsonb",
            "opened_at": "timestamp with time zone",
            "completed_at": "timestamp with time zone",
            "written_at": "timestamp with time zone",
            "schema_version": "integer",
        }
        assert columns["dead_letters"]["at"] == "timestamp with time zone"
        assert columns["dead_letters"]["raw_truncated"] == "boolean"
        assert columns["tenant_summaries"]["analyses"] == "jsonb"
        assert set(columns["jobs_current"]) == set(columns["job_results"])

    async def test_the_schema_parameter_names_the_schema(
        self, postgres_url: str
    ) -> None:
        async with SqlSink(f"{postgres_url}?schema=results_2") as sink:
            assert await sink.write(sink_records([job_result(1)])) == 1
            async with sink.engine.connect() as conn:
                schemas = {
                    row[0]
                    for row in await conn.execute(
                        text(
                            "SELECT table_schema FROM information_schema.tables "
                            "WHERE table_name = 'job_results'"
                        )
                    )
                }
        assert schemas == {"results_2"}
        assert (await read_tables(f"{postgres_url}?schema=results_2"))[
            "job.result"
        ] == [job_result(1)]

    async def test_two_sinks_starting_at_once_both_create_and_write(
        self, postgres_url: str
    ) -> None:
        sinks = [SqlSink(postgres_url) for _ in range(4)]
        try:
            written = await asyncio.gather(
                *(s.write(sink_records(mixed_records(6))) for s in sinks)
            )
        finally:
            for s in sinks:
                await s.close()
        assert sum(written) == 6

    async def test_a_password_never_reaches_repr_logs_or_errors(
        self, postgres_server: PostgresServer
    ) -> None:
        password = "s3cret-Pa55word"
        postgres_server.psql(f"CREATE ROLE writer LOGIN PASSWORD '{password}'")
        url = postgres_server.url("no_such_database").replace(
            "postgres@", f"writer:{password}@"
        )
        with structlog.testing.capture_logs() as logs:
            sink = SqlSink(url)
            assert password not in repr(sink)
            with pytest.raises(Exception) as error:  # noqa: PT011 - any driver error
                await sink.write(sink_records([job_result(1)]))
            await sink.close()
        assert password not in str(error.value)
        assert password not in repr(error.value)
        assert password not in repr(logs)
        assert "writer:***@" in repr(sink)


class TestFanOutSink(SinkContract):
    """Two sinks at once (files and Redis): the contract holds for the pair,
    read back from either."""

    @pytest.fixture
    def make_sink(self, tmp_path: Path, redis_url: str) -> Callable[[], Sink]:
        return lambda: FanOutSink(
            [FileSink(tmp_path / "out"), RedisStreamSink(redis_url, id_ttl_s=600)],
            ["file", "redis"],
        )

    @pytest.fixture
    def read_back(self, tmp_path: Path, redis_url: str) -> ReadBack:
        async def read() -> dict[str, list[Record]]:
            files = {
                kind: [
                    decode_record(line)
                    for line in read_lines(tmp_path / "out" / f"{kind}.jsonl")
                ]
                for kind in RECORD_KINDS
            }
            streams = read_streams(redis_url)
            for kind in RECORD_KINDS:  # the same records, in either's order
                ids = sorted(map(record_id, streams[kind]))
                assert ids == sorted(map(record_id, files[kind])), kind
            return files

        return read


async def test_a_fan_out_writes_the_healthy_sinks_while_one_fails(
    tmp_path: Path,
) -> None:
    healthy, flaky = FileSink(tmp_path / "a"), FileSink(tmp_path / "b")
    sink = FanOutSink([healthy, FailingSink(flaky, failures=2)], ["file:a", "file:b"])
    records = sink_records(mixed_records(6))

    def held(directory: str) -> int:
        return sum(
            len(read_lines(tmp_path / directory / f"{kind}.jsonl"))
            for kind in RECORD_KINDS
        )

    try:
        for _ in range(2):
            with pytest.raises(SinkWriteFailed, match="file:b: ConnectionError"):
                await sink.write(records)
            # The healthy sink holds every record from the first attempt on.
            assert held("a") == len(records)
        assert await sink.write(records) == 0  # all held by the first sink
        assert held("a") == held("b") == len(records)
    finally:
        await sink.close()


class _Deferrals:
    """A place to defer to that keeps what it is handed (or fails)."""

    def __init__(self) -> None:
        self.handed: list[tuple[str, list[str]]] = []
        self.fail = False

    async def __call__(self, name: str, records: Sequence[SinkRecord]) -> None:
        if self.fail:
            raise ConnectionError("Temporal is away too")
        self.handed.append((name, [r.record_id for r in records]))


def _deferring(
    tmp_path: Path, failing: FailingSink, **options: float
) -> tuple[FanOutSink, _Deferrals]:
    sink = FanOutSink([FileSink(tmp_path / "a"), failing], ["a", "b"], **options)
    deferrals = _Deferrals()
    sink.defer_to(deferrals)
    return sink, deferrals


async def test_a_down_sink_is_deferred_and_the_write_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = FailingSink(FileSink(tmp_path / "b"), down=True)
    sink, deferrals = _deferring(tmp_path, failing)
    first, second = sink_records([job_result(1)]), sink_records([job_result(2)])
    counted = fanout.DEFERRED.labels("b")
    before = counted._value.get()
    try:
        assert await sink.write(first) == 1
        assert deferrals.handed == [("b", [first[0].record_id])]
        assert counted._value.get() == before + 1
        assert sink.down() == ["b"]
        # Within its probe interval the down sink is not tried at all.
        assert await sink.write(second) == 1
        assert failing.attempts == 1
        assert deferrals.handed[-1] == ("b", [second[0].record_id])
        # Once the interval has passed, one write probes it; when that
        # succeeds the sink is back and nothing more is deferred.
        failing.down = False
        now = fanout.time.monotonic()
        monkeypatch.setattr(fanout.time, "monotonic", lambda: now + 2)
        third = sink_records([job_result(3)])
        assert await sink.write(third) == 1
        assert failing.attempts == 2
        assert sink.down() == []
        assert len(deferrals.handed) == 2
        assert len(read_lines(tmp_path / "b" / "job.result.jsonl")) == 1
    finally:
        await sink.close()


async def test_a_failed_probe_doubles_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = FailingSink(FileSink(tmp_path / "b"), down=True)
    sink, deferrals = _deferring(tmp_path, failing)
    clock = [100.0]
    monkeypatch.setattr(fanout.time, "monotonic", lambda: clock[0])
    try:
        for n, at in enumerate([100.0, 101.5, 102.0, 103.6, 107.5], start=1):
            clock[0] = at
            await sink.write(sink_records([job_result(n)]))
        # tried at 100 (down: wait 1 s), 101.5 (wait 2 s), 103.6 (wait 4 s);
        # skipped at 102 and 107.5
        assert failing.attempts == 3
        assert len(deferrals.handed) == 5
    finally:
        await sink.close()


async def test_a_sink_that_hangs_is_deferred_after_the_member_timeout(
    tmp_path: Path,
) -> None:
    class Hanging(FailingSink):
        async def write(self, records: Sequence[SinkRecord]) -> int:
            await asyncio.sleep(3600)
            return 0

    sink, deferrals = _deferring(
        tmp_path, Hanging(FileSink(tmp_path / "b")), member_timeout_s=1.0
    )
    try:
        assert await sink.write(sink_records([job_result(1)])) == 1
        assert [name for name, _ in deferrals.handed] == ["b"]
    finally:
        await sink.close()


async def test_nothing_is_deferred_when_no_sink_took_the_batch(tmp_path: Path) -> None:
    failing = FailingSink(FileSink(tmp_path / "b"), down=True)
    sink = FanOutSink(
        [FailingSink(FileSink(tmp_path / "a"), down=True), failing], ["a", "b"]
    )
    deferrals = _Deferrals()
    sink.defer_to(deferrals)
    try:
        for _ in range(2):  # every sink down: each write tries them all
            with pytest.raises(SinkWriteFailed, match="a: ConnectionError"):
                await sink.write(sink_records([job_result(1)]))
        assert failing.attempts == 2
        assert deferrals.handed == []
    finally:
        await sink.close()


async def test_a_failed_deferral_fails_the_write(tmp_path: Path) -> None:
    failing = FailingSink(FileSink(tmp_path / "b"), down=True)
    sink, deferrals = _deferring(tmp_path, failing)
    deferrals.fail = True
    try:
        with pytest.raises(ConnectionError, match="Temporal is away"):
            await sink.write(sink_records([job_result(1)]))
        # The retry writes nothing twice in the healthy sink.
        deferrals.fail = False
        assert await sink.write(sink_records([job_result(1)])) == 0
        assert len(deferrals.handed) == 1
    finally:
        await sink.close()


def test_a_fan_out_refuses_two_sinks_of_one_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct names"):
        FanOutSink([FileSink(tmp_path / "a"), FileSink(tmp_path / "b")], ["x", "x"])


async def test_a_probe_that_refuses_the_records_leaves_the_sink_probed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = FailingSink(FileSink(tmp_path / "b"), down=True)
    sink, _ = _deferring(tmp_path, failing)
    clock = [100.0]
    monkeypatch.setattr(fanout.time, "monotonic", lambda: clock[0])
    try:
        await sink.write(sink_records([job_result(1)]))  # b goes down
        clock[0] = 102.0
        bad = [SinkRecord("no.such.kind", "x", b"{}")]
        with pytest.raises(ValueError, match="unknown record kind"):
            await sink.write(bad)  # the probe of b meets records every sink refuses
        failing.down = False
        assert await sink.write(sink_records([job_result(2)])) == 1
        assert failing.attempts == 3  # probed again, and back
        assert sink.down() == []
    finally:
        await sink.close()
