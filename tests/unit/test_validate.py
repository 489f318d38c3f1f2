"""Edge validation: ``parse_event`` turns bytes into an Event or a precise Rejection."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.events import ID_MAX_LENGTH, MAX_PARTS, AnalysisResult, JobOpened, event_json
from wire.validate import (
    RAW_KEEP_BYTES,
    Limits,
    Rejection,
    parse_event,
    reject,
    rejection_id,
)

AT = "2026-01-01T00:00:00Z"
AT_DATETIME = datetime(2026, 1, 1, tzinfo=UTC)
PAYLOAD = {"model": "detect-v2", "detections": [{"label": "car", "score": 0.91}]}


def result_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "analysis.result",
        "event_id": "evt-1",
        "tenant_id": "tenant-a",
        "job_id": "job-1",
        "analysis_type": "detect",
        "part": 0,
        "parts": 2,
        "payload": PAYLOAD,
        "at": AT,
    }
    fields.update(changes)
    return fields


def opened_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "job.opened",
        "event_id": "evt-open",
        "tenant_id": "tenant-a",
        "job_id": "job-1",
        "required": ["detect", "caption"],
        "at": AT,
    }
    fields.update(changes)
    return fields


def without(fields: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != name}


def encode(fields: dict[str, Any]) -> bytes:
    return msgspec.json.encode(fields)


def rejected(raw: bytes, limits: Limits = Limits()) -> Rejection:
    outcome = parse_event(raw, limits)
    assert isinstance(outcome, Rejection), f"accepted {raw[:200]!r} as {outcome!r}"
    assert outcome.reason
    return outcome


def payload_of_size(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    body = b'{"x":"' + b"y" * (size - 8) + b'"}'
    assert len(body) == size
    return body


def result_with_payload(payload: bytes, **changes: Any) -> bytes:
    fields = result_fields(payload=msgspec.Raw(payload), **changes)
    return encode(fields)


# --- accepted events ---------------------------------------------------------


def test_valid_job_opened_is_accepted_as_typed_event() -> None:
    event = parse_event(encode(opened_fields(deadline_s=90)))
    assert event == JobOpened(
        event_id="evt-open",
        tenant_id="tenant-a",
        job_id="job-1",
        required=["detect", "caption"],
        at=AT_DATETIME,
        deadline_s=90.0,
    )


def test_job_opened_without_deadline_has_none() -> None:
    event = parse_event(encode(opened_fields()))
    assert isinstance(event, JobOpened)
    assert event.deadline_s is None


def test_valid_analysis_result_is_accepted_as_typed_event() -> None:
    event = parse_event(encode(result_fields(part=1)))
    assert isinstance(event, AnalysisResult)
    assert (event.event_id, event.tenant_id, event.job_id) == (
        "evt-1",
        "tenant-a",
        "job-1",
    )
    assert (event.analysis_type, event.part, event.parts) == ("detect", 1, 2)
    assert event.at == AT_DATETIME
    assert json.loads(event.payload) == PAYLOAD


def test_payload_is_kept_byte_for_byte_as_the_objects_json_text() -> None:
    """Spacing, key order, number spelling and escapes all survive untouched."""
    payload = b'{ "z" : 1.50,\n  "a":[1, 2 ,3], "s":"caf\\u00e9 \\"q\\"", "n":null }'
    event = parse_event(result_with_payload(payload))
    assert isinstance(event, AnalysisResult)
    assert event.payload == payload


def test_timestamp_with_an_offset_is_accepted_as_the_same_instant() -> None:
    event = parse_event(encode(result_fields(at="2026-01-01T02:00:00+02:00")))
    assert isinstance(event, AnalysisResult)
    assert event.at == AT_DATETIME


def test_id_of_exactly_the_maximum_length_is_accepted() -> None:
    event = parse_event(encode(result_fields(job_id="j" * ID_MAX_LENGTH)))
    assert isinstance(event, AnalysisResult)


def test_payload_of_exactly_the_limit_is_accepted() -> None:
    limits = Limits(max_payload_bytes=64)
    event = parse_event(result_with_payload(payload_of_size(64)), limits)
    assert isinstance(event, AnalysisResult)
    assert len(event.payload) == 64


def test_last_part_is_accepted() -> None:
    event = parse_event(encode(result_fields(part=MAX_PARTS - 1, parts=MAX_PARTS)))
    assert isinstance(event, AnalysisResult)


@pytest.mark.parametrize("fields", [opened_fields(deadline_s=5), result_fields()])
def test_event_json_of_an_accepted_event_parses_back_to_the_same_event(
    fields: dict[str, Any],
) -> None:
    event = parse_event(encode(fields))
    assert not isinstance(event, Rejection)
    assert parse_event(event_json(event)) == event


# --- rejections naming the field ----------------------------------------------

REJECTED_FIELDS = [
    pytest.param(without(result_fields(), "payload"), "`payload`", id="no-payload"),
    pytest.param(without(result_fields(), "part"), "`part`", id="missing-part"),
    pytest.param(
        without(opened_fields(), "tenant_id"), "`tenant_id`", id="missing-tenant"
    ),
    pytest.param(without(opened_fields(), "required"), "`required`", id="missing-req"),
    pytest.param(result_fields(part="0"), "`$.part`", id="part-as-string"),
    pytest.param(result_fields(part=0.0), "`$.part`", id="part-as-float"),
    pytest.param(result_fields(part=True), "`$.part`", id="part-as-bool"),
    pytest.param(result_fields(parts="2"), "`$.parts`", id="parts-as-string"),
    pytest.param(result_fields(tenant_id=7), "`$.tenant_id`", id="tenant-as-int"),
    pytest.param(opened_fields(required="detect"), "`$.required`", id="required-str"),
    pytest.param(result_fields(at=1767225600), "`$.at`", id="at-as-number"),
    pytest.param(result_fields(at="yesterday"), "`$.at`", id="at-not-rfc3339"),
    pytest.param(result_fields(tenant_id=""), "`$.tenant_id`", id="empty-tenant"),
    pytest.param(result_fields(event_id=""), "`$.event_id`", id="empty-event-id"),
    pytest.param(opened_fields(job_id=""), "`$.job_id`", id="empty-job-opened"),
    pytest.param(
        result_fields(job_id="j" * (ID_MAX_LENGTH + 1)), "`$.job_id`", id="id-too-long"
    ),
    pytest.param(
        result_fields(tenant_id="tenant-a/../other"), "`$.tenant_id`", id="id-slash"
    ),
    pytest.param(result_fields(analysis_type="a/b"), "`$.analysis_type`", id="type-/"),
    pytest.param(opened_fields(required=["ok", "a/b"]), "`$.required[1]`", id="req-/"),
    pytest.param(result_fields(event_id="a\nb"), "`$.event_id`", id="id-newline"),
    pytest.param(result_fields(event_id="a\x00b"), "`$.event_id`", id="id-nul"),
    pytest.param(result_fields(job_id="a\x1fb"), "`$.job_id`", id="id-unit-sep"),
    pytest.param(result_fields(job_id="a\x7fb"), "`$.job_id`", id="id-del"),
    pytest.param(result_fields(type="analysis.retracted"), "`$.type`", id="type-?"),
    pytest.param(result_fields(type=1), "`$.type`", id="type-as-int"),
    pytest.param(result_fields(part=2, parts=2), "`$.part`", id="part-eq-parts"),
    pytest.param(result_fields(part=5, parts=2), "`$.part`", id="part-over-parts"),
    pytest.param(result_fields(part=-1), "`$.part`", id="negative-part"),
    pytest.param(result_fields(parts=0), "`$.parts`", id="parts-zero"),
    pytest.param(result_fields(parts=MAX_PARTS + 1), "`$.parts`", id="parts-over-max"),
    pytest.param(result_fields(payload=[1, 2]), "`$.payload`", id="payload-array"),
    pytest.param(result_fields(payload="{}"), "`$.payload`", id="payload-string"),
    pytest.param(result_fields(payload=3), "`$.payload`", id="payload-number"),
    pytest.param(result_fields(payload=None), "`$.payload`", id="payload-null"),
    pytest.param(result_fields(at="2026-01-01T00:00:00"), "`$.at`", id="naive-at"),
    pytest.param(opened_fields(at="2026-01-01T00:00:00"), "`$.at`", id="naive-open"),
    pytest.param(opened_fields(required=["a", "b", "a"]), "`$.required`", id="req-dup"),
    pytest.param(opened_fields(required=[]), "`$.required`", id="required-empty"),
    pytest.param(opened_fields(deadline_s=0), "`$.deadline_s`", id="deadline-zero"),
    pytest.param(opened_fields(deadline_s=-5), "`$.deadline_s`", id="deadline-neg"),
]


@pytest.mark.parametrize(("fields", "where"), REJECTED_FIELDS)
def test_invalid_field_is_rejected_with_a_reason_naming_it(
    fields: dict[str, Any], where: str
) -> None:
    rejection = rejected(encode(fields))
    assert where in rejection.reason


def test_string_part_is_rejected_not_coerced() -> None:
    rejection = rejected(encode(result_fields(part="0")))
    assert rejection.reason == "Expected `int`, got `str` - at `$.part`"


def test_bad_id_reason_says_what_an_id_may_contain() -> None:
    """The id pattern is explained in words, not shown as a regex."""
    rejection = rejected(encode(result_fields(tenant_id="a/b")))
    assert "no '/'" in rejection.reason
    assert "^" not in rejection.reason


def test_unknown_type_reason_names_the_type() -> None:
    rejection = rejected(encode(result_fields(type="analysis.retracted")))
    assert rejection.reason.startswith("unknown event type")
    assert "analysis.retracted" in rejection.reason


def test_part_outside_parts_reason_gives_the_valid_range() -> None:
    rejection = rejected(encode(result_fields(part=3, parts=3)))
    assert "0..2" in rejection.reason


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"type": "analysis.result", "event_id": ', id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"hello", id="garbage"),
        pytest.param(b'{"type": "job.opened",}', id="trailing-comma"),
    ],
)
def test_input_that_is_not_json_is_rejected(raw: bytes) -> None:
    rejection = rejected(raw)
    assert rejection.reason.startswith("not valid JSON")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\xff\xfe\x00{", id="bom-garbage"),
        pytest.param(b"\x80" + encode(result_fields()), id="stray-byte-first"),
    ],
)
def test_input_that_is_not_utf8_is_rejected(raw: bytes) -> None:
    rejection = rejected(raw)
    assert rejection.reason.startswith("not valid JSON")
    assert rejection.raw == raw


@pytest.mark.parametrize("raw", [b"[]", b'"job.opened"', b"42", b"null"])
def test_json_that_is_not_an_object_is_rejected(raw: bytes) -> None:
    assert "Expected `object`" in rejected(raw).reason


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(encode(result_fields()).replace(b'"evt-1"', b'"\xffe"'), id="id"),
        pytest.param(b'{"type":"\xff"}', id="type"),
        pytest.param(
            encode(opened_fields()).replace(b'"detect"', b'"\xc3"'), id="required"
        ),
    ],
)
def test_invalid_utf8_inside_a_string_field_is_rejected_not_raised(raw: bytes) -> None:
    rejected(raw)


def test_invalid_utf8_inside_the_payload_is_rejected() -> None:
    rejected(result_with_payload(b'{"label":"caf\xe9"}'))


DEEP = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(result_with_payload(b'{"a":' + DEEP + b"}"), id="payload"),
        pytest.param(b'{"event_id":' + DEEP + b"}", id="event-id"),
    ],
)
def test_deeply_nested_input_is_rejected_not_raised(raw: bytes) -> None:
    assert len(raw) < Limits().max_event_bytes
    outcome = parse_event(raw)
    assert isinstance(outcome, Rejection)


# --- size limits --------------------------------------------------------------


def test_payload_over_the_configured_limit_is_rejected() -> None:
    limits = Limits(max_payload_bytes=64)
    rejection = rejected(result_with_payload(payload_of_size(65)), limits)
    assert "`$.payload`" in rejection.reason
    assert "65 bytes" in rejection.reason
    assert "limit of 64" in rejection.reason


def test_event_over_max_event_bytes_is_rejected_before_parsing() -> None:
    limits = Limits(max_payload_bytes=64)
    raw = result_with_payload(payload_of_size(limits.max_event_bytes))
    rejection = rejected(raw, limits)
    assert rejection.reason == (
        f"event is {len(raw)} bytes, over the limit of {limits.max_event_bytes}"
    )
    assert (rejection.event_id, rejection.tenant_id, rejection.job_id) == (
        "evt-1",
        "tenant-a",
        "job-1",
    )


def test_max_event_bytes_leaves_room_for_the_envelope() -> None:
    limits = Limits(max_payload_bytes=1000)
    assert limits.max_event_bytes > limits.max_payload_bytes
    event = parse_event(result_with_payload(payload_of_size(1000)), limits)
    assert isinstance(event, AnalysisResult)


# --- what a rejection carries -------------------------------------------------


def test_rejection_carries_the_ids_that_could_be_read() -> None:
    rejection = rejected(encode(result_fields(part="0")))
    assert (rejection.event_id, rejection.tenant_id, rejection.job_id) == (
        "evt-1",
        "tenant-a",
        "job-1",
    )


def test_rejection_leaves_unreadable_ids_none() -> None:
    rejection = rejected(encode(result_fields(event_id=12, job_id="")))
    assert rejection.event_id is None
    assert rejection.job_id is None
    assert rejection.tenant_id == "tenant-a"


def test_rejection_of_non_json_has_no_ids() -> None:
    rejection = rejected(b"not json at all")
    assert (rejection.event_id, rejection.tenant_id, rejection.job_id) == (
        None,
        None,
        None,
    )


def test_rejection_keeps_small_raw_input_whole() -> None:
    raw = encode(result_fields(part="0"))
    rejection = rejected(raw)
    assert rejection.raw == raw
    assert rejection.raw_truncated is False


def test_rejection_truncates_raw_input_past_raw_keep_bytes() -> None:
    raw = result_with_payload(payload_of_size(RAW_KEEP_BYTES + 1000), part="0")
    rejection = rejected(raw)
    assert rejection.raw == raw[:RAW_KEEP_BYTES]
    assert rejection.raw_truncated is True
    assert rejection.event_id == "evt-1"


def test_rejection_id_is_equal_for_equal_bytes() -> None:
    raw = encode(result_fields(part="0"))
    assert rejected(raw).rejection_id == rejected(bytes(raw)).rejection_id
    assert rejected(raw).rejection_id == rejection_id(raw)


def test_rejection_id_differs_for_different_bytes() -> None:
    first = rejected(encode(result_fields(part="0")))
    second = rejected(encode(result_fields(part="1")))
    assert first.rejection_id != second.rejection_id


def test_rejection_id_covers_bytes_past_the_kept_prefix() -> None:
    """Two large inputs differing only after RAW_KEEP_BYTES are different inputs."""
    prefix = b"x" * (RAW_KEEP_BYTES + 10)
    first, second = rejected(prefix + b"1"), rejected(prefix + b"2")
    assert first.raw == second.raw
    assert first.rejection_id != second.rejection_id


def test_reject_builds_a_rejection_with_the_given_reason() -> None:
    raw = encode(result_fields())
    rejection = reject(raw, "refused for a test")
    assert rejection.reason == "refused for a test"
    assert rejection.raw == raw
    assert rejection.rejection_id == rejection_id(raw)
    assert rejection.event_id == "evt-1"


# --- parse_event never raises ---------------------------------------------------

FIELD_NAMES = [
    "type",
    "event_id",
    "tenant_id",
    "job_id",
    "analysis_type",
    "part",
    "parts",
    "payload",
    "at",
    "required",
    "deadline_s",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["analysis.result", "job.opened", AT, "2026-01-01T00:00:00"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=6
        )
    ),
    max_leaves=20,
)
# Valid events with some fields replaced by arbitrary values: near misses find
# more paths through the validator than random objects alone.
NEAR_MISSES = st.builds(
    lambda base, changes: {**base, **changes},
    st.sampled_from([result_fields(), opened_fields()]),
    st.dictionaries(st.sampled_from(FIELD_NAMES), JSON_VALUES, max_size=3),
)


def check_never_raises(raw: bytes) -> None:
    outcome = parse_event(raw, Limits(max_payload_bytes=256))
    if isinstance(outcome, Rejection):
        assert outcome.reason
        assert outcome.rejection_id == rejection_id(raw)
    else:
        assert isinstance(outcome, AnalysisResult | JobOpened)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_parse_event_never_raises_for_arbitrary_bytes(raw: bytes) -> None:
    check_never_raises(raw)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES | NEAR_MISSES)
def test_parse_event_never_raises_for_arbitrary_json(value: Any) -> None:
    check_never_raises(msgspec.json.encode(value))


def nested(depth: int) -> bytes:
    """A payload nesting ``depth`` levels (the payload object is level 1,
    then arrays and objects alternate), with brackets inside a string."""
    inner = b'"[[{{ not a level"'
    for level in range(depth, 0, -1):
        inner = b'{"o":' + inner + b"}" if level % 2 else b"[" + inner + b"]"
    return inner


@pytest.mark.parametrize("depth", [1, 2, 63, 64])
def test_payloads_within_the_depth_limit_are_accepted(depth: int) -> None:
    payload = nested(depth)
    event = parse_event(result_with_payload(payload))
    assert isinstance(event, AnalysisResult)
    assert event.payload == payload


@pytest.mark.parametrize("depth", [65, 500])
def test_payloads_nested_past_the_limit_are_rejected_with_the_reason(
    depth: int,
) -> None:
    rejection = rejected(result_with_payload(nested(depth)))
    assert rejection.reason == "payload nests deeper than 64 levels - at `$.payload`"


def test_the_depth_limit_is_a_setting() -> None:
    assert isinstance(
        parse_event(result_with_payload(nested(8)), Limits(max_payload_depth=8)),
        AnalysisResult,
    )
    rejected(result_with_payload(nested(9)), Limits(max_payload_depth=8))
