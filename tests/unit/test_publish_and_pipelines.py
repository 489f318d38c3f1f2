"""From a job's publication to records: result versions, dead letters, pipelines."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from actors.pipelines import (
    DEFAULT,
    Pipeline,
    collected,
    load_pipeline,
    part_counts,
)
from actors.rules.job import (
    JobSettings,
    JobSnapshot,
    JobState,
    Publication,
    apply_batch,
    apply_event,
    decide,
    new_job,
)
from actors.rules.publish import job_records, rejection_records, too_late_records
from wire.events import Event, event_json
from wire.records import DeadLetter, JobResult, decode_record, encode_record
from wire.validate import RAW_KEEP_BYTES, Rejection, parse_event

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WRITTEN_AT = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
TENANT, JOB = "tenant-a", "job-1"
SETTINGS = JobSettings(default_deadline_s=600)

# Producer bytes with spacing, number spelling and escapes a re-encoder would change.
PAYLOADS = {
    ("detect", 0): b'{"label": "car",  "score": 0.50, "box": [1, 2, 3, 4]}',
    ("detect", 1): b'{ "label":"caf\\u00e9", "score":1e-3 }',
    ("caption", 0): b'{"text": "a \\"quoted\\" street\\n", "tokens": 7}',
}


def parsed(raw: bytes) -> Event:
    event = parse_event(raw)
    assert not isinstance(event, Rejection), event
    return event


def opened_line(*required: str) -> bytes:
    return msgspec.json.encode(
        {
            "type": "job.opened",
            "event_id": "opened",
            "tenant_id": TENANT,
            "job_id": JOB,
            "required": list(required),
            "at": "2026-01-01T00:00:00Z",
        }
    )


def result_line(analysis_type: str, part: int, parts: int, event_id: str = "") -> bytes:
    return msgspec.json.encode(
        {
            "type": "analysis.result",
            "event_id": event_id or f"{analysis_type}-{part}",
            "tenant_id": TENANT,
            "job_id": JOB,
            "analysis_type": analysis_type,
            "part": part,
            "parts": parts,
            "payload": msgspec.Raw(
                PAYLOADS.get((analysis_type, part), b'{"other": true}')
            ),
            "at": "2026-01-01T00:00:01Z",
        }
    )


def complete_job() -> JobState:
    state = new_job(TENANT, JOB, T0)
    lines = [
        result_line("detect", 1, 2),
        opened_line("detect", "caption"),
        result_line("caption", 0, 1),
        result_line("detect", 0, 2),
    ]
    apply_batch(state, [parsed(line) for line in lines])
    return state


def timed_out_job() -> JobState:
    """detect has part 1 of 2, caption never arrived."""
    state = new_job(TENANT, JOB, T0)
    apply_batch(
        state,
        [parsed(opened_line("detect", "caption")), parsed(result_line("detect", 1, 2))],
    )
    return state


def unopened_job() -> JobState:
    """Parts arrived, job.opened never did."""
    state = new_job(TENANT, JOB, T0)
    apply_batch(
        state,
        [parsed(result_line("ocr", 0, 2)), parsed(result_line("detect", 0, 1))],
    )
    return state


def publication_of(state: JobState, now: datetime) -> Publication:
    publication = decide(state, now, SETTINGS)
    assert publication is not None
    return publication


def only_result(records: list[Any]) -> JobResult:
    [record] = [r for r in records if isinstance(r, JobResult)]
    return record


# --- job_records: the result version ------------------------------------------------


def test_job_records_build_the_result_version_with_its_stable_id() -> None:
    state = complete_job()
    records = job_records(
        publication_of(state, T0 + timedelta(seconds=3)), collected, WRITTEN_AT
    )
    assert len(records) == 1
    record = only_result(records)
    assert record.result_id == f"{TENANT}/{JOB}/1"
    assert (record.tenant_id, record.job_id) == (TENANT, JOB)
    assert (record.version, record.status) == (1, "complete")
    assert record.events == 4
    assert record.required == ["detect", "caption"]
    assert record.missing == {}
    assert record.opened_at == "2026-01-01T00:00:00+00:00"
    assert record.completed_at == "2026-01-01T00:00:03+00:00"


def test_collected_analyses_hold_every_payload_in_part_order() -> None:
    record = only_result(
        job_records(publication_of(complete_job(), T0), collected, WRITTEN_AT)
    )
    analyses = msgspec.json.decode(msgspec.json.encode(record.analyses))
    assert list(analyses) == ["detect", "caption"]
    assert analyses["detect"]["parts"] == 2
    assert analyses["detect"]["payloads"] == [
        json.loads(PAYLOADS[("detect", 0)]),
        json.loads(PAYLOADS[("detect", 1)]),
    ]
    assert analyses["caption"] == {
        "parts": 1,
        "payloads": [json.loads(PAYLOADS[("caption", 0)])],
    }


def test_payloads_in_the_encoded_record_are_the_producers_bytes() -> None:
    record = only_result(
        job_records(publication_of(complete_job(), T0), collected, WRITTEN_AT)
    )
    encoded = encode_record(record)
    for payload in PAYLOADS.values():
        assert payload in encoded
    decoded = decode_record(encoded)
    assert isinstance(decoded, JobResult)
    assert decoded.analyses["detect"]["payloads"][1] == json.loads(
        PAYLOADS[("detect", 1)]
    )
    # Through the record and back, the payload re-encodes to the producer's JSON.
    assert json.loads(encoded)["analyses"]["caption"]["payloads"][0] == json.loads(
        PAYLOADS[("caption", 0)]
    )


def test_timed_out_result_has_none_for_missing_parts_and_lists_them() -> None:
    record = only_result(
        job_records(
            publication_of(timed_out_job(), T0 + timedelta(seconds=600)),
            collected,
            WRITTEN_AT,
        )
    )
    assert record.status == "timed_out"
    assert record.missing == {"detect": [0], "caption": []}
    analyses = json.loads(msgspec.json.encode(record.analyses))
    assert analyses["detect"] == {
        "parts": 2,
        "payloads": [None, json.loads(PAYLOADS[("detect", 1)])],
    }
    assert analyses["caption"] == {"parts": None, "payloads": []}


def test_result_without_job_opened_has_no_required_and_no_opened_at() -> None:
    record = only_result(
        job_records(
            publication_of(unopened_job(), T0 + timedelta(seconds=600)),
            collected,
            WRITTEN_AT,
        )
    )
    assert record.required is None
    assert record.opened_at is None
    assert list(record.analyses) == ["ocr", "detect"]
    assert record.missing == {"ocr": [1]}


def test_job_records_use_the_given_pipeline() -> None:
    record = only_result(
        job_records(
            publication_of(timed_out_job(), T0 + timedelta(seconds=600)),
            part_counts,
            WRITTEN_AT,
        )
    )
    assert record.analyses == {"detect": {"received": 1, "parts": 2}}


# --- job_records: dead letters --------------------------------------------------------


def test_job_records_turn_refusals_into_dead_letters() -> None:
    state = complete_job()
    conflicting = parsed(result_line("detect", 0, 2, event_id="late-conflict"))
    apply_event(state, conflicting)
    records = job_records(publication_of(state, T0), collected, WRITTEN_AT)
    [dead] = [r for r in records if isinstance(r, DeadLetter)]
    assert dead.dead_letter_id == f"{TENANT}/{JOB}/late-conflict"
    assert "conflict" in dead.reason
    assert dead.source == "job"
    assert dead.raw == event_json(conflicting).decode()
    assert dead.raw_encoding == "utf-8"
    assert dead.raw_truncated is False
    assert (dead.event_id, dead.tenant_id, dead.job_id) == (
        "late-conflict",
        TENANT,
        JOB,
    )
    assert dead.at == WRITTEN_AT.isoformat()


def test_dead_letter_raw_is_the_events_json_and_parses_back_to_it() -> None:
    state = complete_job()
    stray = parsed(result_line("ocr", 0, 1))
    apply_event(state, stray)
    [dead] = job_records(publication_of(state, T0), collected, WRITTEN_AT)[1:]
    assert isinstance(dead, DeadLetter)
    assert parse_event(dead.raw.encode()) == stray
    assert json.loads(dead.raw)["payload"] == json.loads(b'{"other": true}')


def test_refusals_only_publication_gives_only_dead_letters() -> None:
    state = timed_out_job()
    apply_event(state, parsed(result_line("ocr", 0, 1)))
    records = job_records(publication_of(state, T0), collected, WRITTEN_AT)
    assert [type(r) for r in records] == [DeadLetter]


# --- rejection and too-late records -------------------------------------------------


def test_rejection_records_keep_utf8_raw_as_text() -> None:
    raw = b'{"type": "analysis.result", "event_id": "e1", "part": "0"}'
    rejection = parse_event(raw)
    assert isinstance(rejection, Rejection)
    [dead] = rejection_records([rejection], WRITTEN_AT)
    assert dead.dead_letter_id == rejection.rejection_id
    assert dead.reason == rejection.reason
    assert dead.source == "edge"
    assert (dead.raw, dead.raw_encoding) == (raw.decode(), "utf-8")
    assert dead.event_id == "e1"
    assert dead.at == WRITTEN_AT.isoformat()


def test_rejection_records_keep_non_utf8_raw_as_base64() -> None:
    raw = b"\xff\xfe{not utf-8 \x80}"
    rejection = parse_event(raw)
    assert isinstance(rejection, Rejection)
    [dead] = rejection_records([rejection], WRITTEN_AT, source="proxy")
    assert dead.raw_encoding == "base64"
    assert base64.b64decode(dead.raw) == raw
    assert dead.source == "proxy"
    assert decode_record(encode_record(dead)) == dead


def test_rejection_records_carry_truncation() -> None:
    raw = b"x" * (RAW_KEEP_BYTES + 1)
    rejection = parse_event(raw)
    assert isinstance(rejection, Rejection)
    [dead] = rejection_records([rejection], WRITTEN_AT)
    assert dead.raw_truncated is True
    assert len(dead.raw) == RAW_KEEP_BYTES


def test_too_late_records_are_keyed_like_job_refusals() -> None:
    event = parsed(result_line("detect", 0, 2))
    [dead] = too_late_records([event], "job closed", WRITTEN_AT)
    assert dead.dead_letter_id == f"{TENANT}/{JOB}/detect-0"
    assert dead.reason == "job closed"
    assert dead.source == "job"
    assert dead.raw == event_json(event).decode()


# --- load_pipeline ------------------------------------------------------------------


def test_load_pipeline_resolves_module_and_function() -> None:
    assert load_pipeline("actors.pipelines:part_counts") is part_counts
    assert load_pipeline("actors.pipelines:collected") is collected
    assert load_pipeline(DEFAULT) is collected


@pytest.mark.parametrize(
    "ref",
    [
        "nonsense",
        "actors.pipelines:missing",
        "actors.pipelines:DEFAULT",  # a str, not a callable
        ":collected",
        "actors.pipelines:",
    ],
)
def test_load_pipeline_raises_value_error_for_a_bad_reference(ref: str) -> None:
    with pytest.raises(ValueError, match=r"pipeline|callable"):
        load_pipeline(ref)


# --- the pipeline contract -----------------------------------------------------------

LATER = T0 + timedelta(hours=1)
PUBLICATIONS: dict[str, Callable[[], Publication]] = {
    "complete": lambda: publication_of(complete_job(), LATER),
    "timed-out": lambda: publication_of(timed_out_job(), LATER),
    "unopened": lambda: publication_of(unopened_job(), LATER),
}


def snapshot(kind: str) -> JobSnapshot:
    snapshot = PUBLICATIONS[kind]().snapshot
    assert snapshot is not None
    return snapshot


@pytest.fixture(params=[collected, part_counts], ids=["collected", "part_counts"])
def pipeline(request: pytest.FixtureRequest) -> Pipeline:
    return request.param


@pytest.mark.parametrize("kind", list(PUBLICATIONS))
class TestPipelineContract:
    """What every pipeline must do, whatever it computes."""

    def test_output_is_json_encodable(self, pipeline: Pipeline, kind: str) -> None:
        encoded = msgspec.json.encode(pipeline(snapshot(kind)))
        json.loads(encoded)

    def test_output_is_deterministic(self, pipeline: Pipeline, kind: str) -> None:
        """The same snapshot gives the same bytes twice."""
        same = snapshot(kind)
        assert msgspec.json.encode(pipeline(same)) == msgspec.json.encode(
            pipeline(same)
        )

    def test_output_is_the_same_for_a_retried_activitys_input(
        self, pipeline: Pipeline, kind: str
    ) -> None:
        """A retry gets the snapshot back from its payload: same record bytes."""
        original = snapshot(kind)
        copy = msgspec.msgpack.decode(
            msgspec.msgpack.encode(original), type=JobSnapshot
        )
        assert msgspec.json.encode(pipeline(copy)) == msgspec.json.encode(
            pipeline(original)
        )

    def test_output_fits_in_a_result_record(
        self, pipeline: Pipeline, kind: str
    ) -> None:
        [record] = job_records(PUBLICATIONS[kind](), pipeline, WRITTEN_AT)
        decoded = decode_record(encode_record(record))
        assert isinstance(decoded, JobResult)
        assert decoded.result_id == record.result_id
        assert decoded.analyses == json.loads(msgspec.json.encode(record.analyses))

    def test_output_leaves_the_snapshot_unchanged(
        self, pipeline: Pipeline, kind: str
    ) -> None:
        original = snapshot(kind)
        before = msgspec.msgpack.encode(original)
        pipeline(original)
        assert msgspec.msgpack.encode(original) == before
