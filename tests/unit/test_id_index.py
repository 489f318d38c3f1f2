"""The file sink's id index: exact like a set of the ids, in 16 bytes each,
whatever the digests collide on and wherever the merges fall."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks import files
from sinks.base import SinkRecord
from sinks.files import FileSink, IdIndex


class _Colliding(IdIndex):
    """Four digests for every id there is: nearly every lookup meets ids
    that share its digest and must be told apart by reading them back."""

    @staticmethod
    def digest(record_id: str) -> int:
        return len(record_id) % 4


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.text(alphabet="abcxyz/", max_size=6)),
        max_size=120,
    ),
    merge_at=st.integers(1, 8),
)
def test_the_index_answers_like_a_set(
    ops: list[tuple[bool, str]], merge_at: int
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(files, "_MERGE_AT", merge_at)
        _check_against_a_set(ops)


def _check_against_a_set(ops: list[tuple[bool, str]]) -> None:
    for index in (IdIndex(), _Colliding()):
        held: set[str] = set()
        lines: list[str] = []  # "the file": offset -> the id on that line
        for add, record_id in ops:
            assert index.contains(record_id, lines.__getitem__) == (record_id in held)
            if add and record_id not in held:
                index.add(record_id, len(lines))
                lines.append(record_id)
                held.add(record_id)
        assert len(index) == len(held)
        for record_id in held:
            assert index.contains(record_id, lines.__getitem__)


def test_cleared_the_index_holds_nothing() -> None:
    index = IdIndex()
    index.add("a", 0)
    index.clear()
    assert len(index) == 0
    assert not index.contains("a", lambda _: "a")


def _record(n: int) -> SinkRecord:
    result_id = f"tenant/job-{n}/1"
    body = msgspec.json.encode({"result_id": result_id, "n": n})
    return SinkRecord(kind="job.result", record_id=result_id, body=body)


async def test_a_file_sink_over_many_merges_writes_each_id_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "_MERGE_AT", 16)
    monkeypatch.setattr(files.IdIndex, "digest", staticmethod(lambda rid: len(rid)))
    sink = FileSink(tmp_path, fsync=False)
    records = [_record(n) for n in range(500)]
    for start in range(0, 500, 37):
        assert await sink.write(records[start : start + 37]) == len(
            records[start : start + 37]
        )
    # Every record again, interleaved with new ones: only the new are written.
    assert await sink.write([*records[::3], _record(500), *records[1::3]]) == 1
    # A second sink reads the file back into its own index, offsets and all.
    again = FileSink(tmp_path, fsync=False)
    assert await again.write([*records[::7], _record(501)]) == 1
    lines = (tmp_path / "job.result.jsonl").read_bytes().splitlines()
    assert len(lines) == 502
    assert len({msgspec.json.decode(line)["result_id"] for line in lines}) == 502
    await sink.close()
    await again.close()
