"""Models (``actors.models``, ``wire.models``): declared tables, rows checked
against their contract and tests, failures as dead letters, and the built-in
``job_parts`` and example ``detections`` models."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.activities import Activities
from actors.models import (
    BUILT_IN,
    EXAMPLE,
    Model,
    detections,
    job_parts,
    load_models,
    model,
    model_records,
)
from actors.pipelines import collected
from actors.rules.job import JobSnapshot, Publication, RollupDelta, Slot
from actors.settings import WorkerConfig
from sinks import FileSink, SinkRecord
from wire.events import AnalysisResult, JobOpened
from wire.models import ModelTable, column_type
from wire.records import DeadLetter, decode_record
from wire.synthetic import FAULTY_SCORE, LABELS, payload
from wire.validate import MAX_REASON_CHARS, RAW_KEEP_BYTES, parse_event

AT = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
TENANT, JOB = "acme", "j1"


def result(kind: str, part: int, parts: int, body: bytes) -> AnalysisResult:
    event = parse_event(
        b'{"type":"analysis.result","event_id":"%s","tenant_id":"%s",'
        b'"job_id":"%s","analysis_type":"%s","part":%d,"parts":%d,'
        b'"payload":%s,"at":"2026-01-01T00:00:00Z"}'
        % (
            f"{JOB}-{kind}-{part}".encode(),
            TENANT.encode(),
            JOB.encode(),
            kind.encode(),
            part,
            parts,
            body,
        )
    )
    assert isinstance(event, AnalysisResult), event
    return event


def snapshot_of(
    parts: dict[str, list[bytes | None]], *, version: int = 1
) -> JobSnapshot:
    """A snapshot holding ``parts`` (None: a part that never arrived)."""
    slots = {}
    for kind, bodies in parts.items():
        events = [
            None if body is None else result(kind, n, len(bodies), body)
            for n, body in enumerate(bodies)
        ]
        slots[kind] = Slot(
            parts=len(bodies),
            events=events,
            filled=sum(e is not None for e in events),
        )
    return JobSnapshot(
        tenant_id=TENANT,
        job_id=JOB,
        version=version,
        status="complete" if version == 1 else "amended",
        opened=JobOpened(
            event_id="open",
            tenant_id=TENANT,
            job_id=JOB,
            required=list(parts),
            at=datetime(2026, 1, 1, tzinfo=UTC),
        ),
        slots=slots,
        events=1 + sum(s.filled for s in slots.values()),
        completed_at=AT,
    )


def dead_letters(records: list[SinkRecord]) -> list[DeadLetter]:
    found = [decode_record(r.body) for r in records if r.kind == "dead_letter"]
    assert all(isinstance(d, DeadLetter) for d in found)
    return cast(list[DeadLetter], found)


def rows_of(records: list[SinkRecord], kind: str) -> list[dict[str, Any]]:
    return [msgspec.json.decode(r.body) for r in records if r.kind == kind]


# --- job_parts ---------------------------------------------------------------


def test_job_parts_has_one_row_per_received_part_with_the_payload_exactly() -> None:
    body = b'{"b": 2, "a": [1, 2.50]}'
    snapshot = snapshot_of({"ocr": [body, None], "detect": [b"{}"]})

    records = model_records(snapshot, [job_parts], AT)

    assert [(r.kind, r.record_id) for r in records] == [
        ("job_parts", 'acme/j1/1/["detect",0]'),
        ("job_parts", 'acme/j1/1/["ocr",0]'),
    ]
    assert records[1].body == (
        b'{"result_id":"acme/j1/1","tenant_id":"acme","job_id":"j1","version":1,'
        b'"analysis_type":"ocr","part":0,"parts":2,"event_id":"j1-ocr-0",'
        b'"payload":{"b": 2, "a": [1, 2.50]}}'
    )
    assert job_parts.key == ("analysis_type", "part")
    assert job_parts.table.primary_key == ("result_id", "analysis_type", "part")


def test_an_amended_result_writes_its_rows_under_its_own_result_id() -> None:
    records = model_records(
        snapshot_of({"ocr": [b"{}", b"{}"]}, version=3), [job_parts], AT
    )

    rows = rows_of(records, "job_parts")
    assert {(r["result_id"], r["version"]) for r in rows} == {("acme/j1/3", 3)}
    assert [r.record_id for r in records] == [
        'acme/j1/3/["ocr",0]',
        'acme/j1/3/["ocr",1]',
    ]


def test_records_are_the_same_for_a_retried_activitys_input() -> None:
    """A retry decodes the snapshot from its payload: the same ids and bytes,
    dead letters included, so the sink writes each once."""
    rng = random.Random(3)
    original = snapshot_of(
        {"detect": [payload(rng, "detect", 400, faulty=True), payload(rng, "d", 400)]}
    )
    copy = msgspec.msgpack.decode(msgspec.msgpack.encode(original), type=JobSnapshot)

    first = model_records(original, [job_parts, detections], AT)

    assert model_records(copy, [job_parts, detections], AT) == first
    assert len(dead_letters(first)) == 1


# --- the example model: detections ----------------------------------------------


def test_detections_has_one_row_per_object_and_a_faulty_score_is_a_dead_letter() -> (
    None
):
    rng = random.Random(7)
    good = payload(rng, "detect", 400)
    faulty = payload(rng, "detect", 400, faulty=True)
    found = len(msgspec.json.decode(good)["detections"])
    bad_found = len(msgspec.json.decode(faulty)["detections"])
    snapshot = snapshot_of({"detect": [faulty, good], "ocr": [good]})

    records = model_records(snapshot, [detections], AT)

    rows = rows_of(records, "detections")
    assert len(rows) == found + bad_found - 1
    assert {(r["part"], r["index"]) for r in rows} == {
        (0, i) for i in range(1, bad_found)
    } | {(1, i) for i in range(found)}
    assert all(r["label"] in LABELS and 0 <= r["score"] <= 1 for r in rows)
    [dead] = dead_letters(records)
    assert dead.dead_letter_id == "acme/j1/1/model/detections/0"
    assert dead.source == "model"
    assert (dead.tenant_id, dead.job_id) == (TENANT, JOB)
    assert "model detections" in dead.reason
    assert "column score failed check range" in dead.reason
    assert "$.score" in dead.reason
    raw = msgspec.json.decode(dead.raw)
    assert (raw["result_id"], raw["part"], raw["index"], raw["score"]) == (
        "acme/j1/1",
        0,
        0,
        FAULTY_SCORE,
    )


def test_the_example_model_declares_its_tests() -> None:
    columns = {c.name: c for c in detections.table.columns}
    assert [c.name for c in detections.table.columns] == [
        "result_id",
        "tenant_id",
        "job_id",
        "version",
        "part",
        "index",
        "detector",
        "label",
        "score",
        "box",
    ]
    assert (columns["label"].type, columns["score"].type) == ("str", "float")
    assert (columns["box"].type, columns["box"].nullable) == ("json", False)
    assert detections.key == ("part", "index")


# --- checks: every kind of test, drawn ------------------------------------------


class Checked(msgspec.Struct, kw_only=True):
    i: int
    n: int
    ratio: Annotated[float, msgspec.Meta(ge=0, le=1)]
    code: Annotated[str, msgspec.Meta(pattern="^[a-z]+$", max_length=8)]
    colour: Literal["red", "green"]
    note: str
    extra: int | None = None


BAD = "checked"
COLUMNS = ("n", "ratio", "code", "colour", "note")
KNOWN = set(Checked.__struct_fields__)
KNOWN |= {"result_id", "tenant_id", "job_id", "version"}


def good_row(i: int) -> dict[str, Any]:
    return {"i": i, "n": 1, "ratio": 0.5, "code": "ok", "colour": "red", "note": ""}


def violations() -> st.SearchStrategy[tuple[str, str, dict[str, Any]]]:
    """(column, check, row): a row that breaks exactly one check."""

    def with_(column: str, value: Any) -> dict[str, Any]:
        return {**good_row(1), column: value}

    outside = st.floats(min_value=1, exclude_min=True, allow_nan=False) | st.floats(
        max_value=0, exclude_max=True, allow_nan=False
    )
    return st.one_of(
        outside.filter(lambda x: x not in (float("inf"), float("-inf"))).map(
            lambda x: ("ratio", "range", with_("ratio", x))
        ),
        st.text(min_size=1, max_size=8)
        .filter(lambda s: not re.fullmatch("[a-z]+", s))
        .map(lambda s: ("code", "pattern", with_("code", s))),
        st.text(alphabet="abc", min_size=9, max_size=40).map(
            lambda s: ("code", "length", with_("code", s))
        ),
        st.text()
        .filter(lambda s: s not in ("red", "green"))
        .map(lambda s: ("colour", "accepted values", with_("colour", s))),
        st.sampled_from(COLUMNS).map(lambda c: (c, "not null", with_(c, None))),
        st.one_of(st.text(), st.booleans(), st.lists(st.integers(), max_size=2)).map(
            lambda v: ("n", "type", with_("n", v))
        ),
        st.integers().map(lambda v: ("note", "type", with_("note", v))),
        st.sampled_from(COLUMNS).map(
            lambda c: (
                c,
                "missing column",
                {k: v for k, v in good_row(1).items() if k != c},
            )
        ),
        st.from_regex(r"\A[a-z]{1,10}\Z")
        .filter(lambda c: c not in KNOWN)
        .map(lambda c: (c, "unknown column", {**good_row(1), c: 1})),
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(violation=violations(), as_struct=st.booleans())
def test_a_row_that_fails_a_check_is_one_dead_letter_naming_model_column_check(
    violation: tuple[str, str, dict[str, Any]], as_struct: bool
) -> None:
    column, check, bad = violation

    def rows(_: JobSnapshot) -> list[Any]:
        good = [good_row(0), good_row(2)]
        if as_struct:
            # A Struct built in Python is not validated: the check still is.
            good = [Checked(**row) for row in good]
        return [good[0], bad, good[1]]

    checked = model(BAD, row=Checked, key=("i",))(rows)

    records = model_records(snapshot_of({"ocr": [b"{}"]}), [checked], AT)

    assert [r.record_id for r in records if r.kind == BAD] == [
        "acme/j1/1/[0]",
        "acme/j1/1/[2]",
    ]
    [dead] = dead_letters(records)
    assert dead.dead_letter_id == f"acme/j1/1/model/{BAD}/1"
    assert dead.source == "model"
    assert dead.reason.startswith(f"model {BAD}: row 1: column {column} ")
    assert f"failed check {check}" in dead.reason
    assert msgspec.json.decode(dead.raw)["result_id"] == "acme/j1/1"


def test_rows_with_the_same_key_keep_the_first_and_dead_letter_the_rest() -> None:
    twice = model(BAD, row=Checked, key=("i",))(lambda _: [good_row(0)] * 2)

    records = model_records(snapshot_of({"ocr": [b"{}"]}), [twice], AT)

    assert [r.record_id for r in records if r.kind == BAD] == ["acme/j1/1/[0]"]
    [dead] = dead_letters(records)
    assert "failed check unique" in dead.reason
    assert "repeats row 0" in dead.reason


def test_a_row_that_sets_a_system_column_otherwise_is_refused() -> None:
    liar = model(BAD, row=Checked, key=("i",))(
        lambda _: [{**good_row(0), "version": 9}]
    )

    [dead] = dead_letters(model_records(snapshot_of({"ocr": [b"{}"]}), [liar], AT))

    assert "column version failed check system column" in dead.reason


def test_a_model_that_raises_is_one_dead_letter_and_the_others_still_write() -> None:
    def broken(snapshot: JobSnapshot) -> list[Any]:
        return [1 // (snapshot.version - 1)]

    failing = model("broken", row=Checked, key=("i",))(broken)
    snapshot = snapshot_of({"ocr": [b"{}"]})

    records = model_records(snapshot, [failing, job_parts], AT)

    [dead] = dead_letters(records)
    assert dead.dead_letter_id == "acme/j1/1/model/broken"
    assert dead.reason == (
        "model broken raised ZeroDivisionError: integer division or modulo by zero"
    )
    assert [r.kind for r in records] == ["dead_letter", "job_parts"]


def test_a_huge_message_and_row_are_cut_like_every_dead_letters() -> None:
    def loud(_: JobSnapshot) -> list[Any]:
        raise ValueError("x" * 5000)

    huge = model(BAD, row=Checked, key=("i",))(lambda _: [{"i": "y" * 70_000}])
    failing = model("loud", row=Checked, key=("i",))(loud)

    letters = dead_letters(
        model_records(snapshot_of({"ocr": [b"{}"]}), [huge, failing], AT)
    )

    assert [len(d.reason) <= MAX_REASON_CHARS for d in letters] == [True, True]
    assert letters[1].reason.endswith("...")
    assert (letters[0].raw_truncated, len(letters[0].raw)) == (True, RAW_KEEP_BYTES)


def test_a_row_of_another_type_is_a_dead_letter() -> None:
    odd = model(BAD, row=Checked, key=("i",))(lambda _: [42])

    [dead] = dead_letters(model_records(snapshot_of({"ocr": [b"{}"]}), [odd], AT))

    assert "the row failed check type" in dead.reason
    assert dead.raw == "42"


async def test_the_publish_activity_writes_the_result_rows_and_dead_letters(
    tmp_path: Path,
) -> None:
    """The result and the good rows are written beside the model dead letter."""
    rng = random.Random(1)
    snapshot = snapshot_of({"detect": [payload(rng, "detect", 300, faulty=True)]})
    models = load_models([EXAMPLE])
    sink = FileSink(tmp_path, tables=[m.table for m in models])
    activities = Activities(
        client=cast(Any, None),
        sink=sink,
        pipeline=collected,
        config=WorkerConfig(),
        models=models,
    )
    publication = Publication(
        snapshot=snapshot,
        refusals=[],
        rollup=RollupDelta(
            key="k",
            job_id=JOB,
            status="complete",
            events=2,
            analyses={},
            dead_letters=0,
        ),
        changes=1,
    )

    await activities._write_publication(publication, AT)
    await activities._write_publication(publication, AT)  # a retry
    await sink.close()

    def lines(kind: str) -> list[dict[str, Any]]:
        path = tmp_path / f"{kind}.jsonl"
        return [msgspec.json.decode(x) for x in path.read_bytes().splitlines()]

    assert [r["result_id"] for r in lines("job.result")] == ["acme/j1/1"]
    assert len(lines("job_parts")) == 1
    assert len(lines("detections")) >= 1
    assert [(d["source"], d["dead_letter_id"]) for d in lines("dead_letter")] == [
        ("model", "acme/j1/1/model/detections/0")
    ]


# --- declarations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, ("str", False)),
        (Annotated[str, msgspec.Meta(max_length=3)], ("str", False)),
        (Literal["a", "b"], ("str", False)),
        (Literal[1, 2] | None, ("int", True)),
        (int, ("int", False)),
        (bool, ("bool", False)),
        (float | None, ("float", True)),
        (Annotated[float, msgspec.Meta(ge=0)] | None, ("float", True)),
        (datetime, ("datetime", False)),
        (dict[str, int], ("json", False)),
        (list[int] | None, ("json", True)),
        (Checked, ("json", False)),
        (msgspec.Raw, ("json", True)),
        (Any, ("json", True)),
    ],
)
def test_column_types_of_annotations(annotation: Any, expected: tuple) -> None:
    assert column_type(annotation) == expected


@pytest.mark.parametrize("annotation", [set[int], str | int, bytes, Literal["a", 1]])
def test_an_annotation_without_a_column_type_is_refused(annotation: Any) -> None:
    with pytest.raises(TypeError, match="unsupported column type"):
        column_type(annotation)


class WithVersion(msgspec.Struct):
    version: int


class OptionalKey(msgspec.Struct):
    k: str | None


class FloatKey(msgspec.Struct):
    k: float


@pytest.mark.parametrize(
    ("name", "row", "key", "message"),
    [
        ("Bad-Name", Checked, ("i",), "table name"),
        ("job_results", Checked, ("i",), "taken by the system"),
        ("things_current", Checked, ("i",), "_current"),
        ("t", WithVersion, ("version",), "system's columns"),
        ("t", Checked, (), "distinct columns"),
        ("t", Checked, ("nope",), "not a field"),
        ("t", OptionalKey, ("k",), "non-optional str, int or bool"),
        ("t", FloatKey, ("k",), "non-optional str, int or bool"),
        ("t", int, ("k",), "msgspec Struct"),
    ],
)
def test_a_bad_declaration_is_refused(
    name: str, row: Any, key: tuple[str, ...], message: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        ModelTable(name, row, key)


def test_load_models_puts_job_parts_first_and_refuses_what_is_not_a_model() -> None:
    assert [m.name for m in load_models([EXAMPLE])] == ["job_parts", "detections"]
    assert [m.name for m in load_models([EXAMPLE], job_parts=False)] == ["detections"]
    assert load_models([BUILT_IN]) == (job_parts,)
    for ref in ("nope", "actors.models:nothing", "no.such.module:x", "actors.models"):
        with pytest.raises(ValueError, match="model"):
            load_models([ref])
    assert isinstance(job_parts, Model)
