"""The ingress's pure rules: Pub/Sub envelopes, attribute merging, splitting
``/events`` bodies, and the token check."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import pytest

from actors.routing import raw_shard, shard_of
from ingress.envelope import (
    Auth,
    PushMessage,
    authorize,
    decode_push,
    merge_envelope,
    shard_for,
    split_events,
)
from wire import AnalysisResult, JobOpened, Rejection, parse_event

RESULT = (
    b'{"type":"analysis.result","event_id":"e1","tenant_id":"acme","job_id":"j1",'
    b'"analysis_type":"detect","part":0,"parts":1,'
    b'"payload":{"score": 0.50, "boxes": [ 1, 2 ]},"at":"2026-01-01T00:00:00Z"}'
)


def envelope(
    data: bytes | str | None,
    *,
    attributes: dict[str, str] | None = None,
    message_id: str | None = "1234567890",
    **extra: Any,
) -> bytes:
    message: dict[str, Any] = {"publishTime": "2026-01-01T00:00:00Z"}
    if data is not None:
        message["data"] = (
            data if isinstance(data, str) else base64.b64encode(data).decode()
        )
    if attributes is not None:
        message["attributes"] = attributes
    if message_id is not None:
        message["messageId"] = message_id
        message["message_id"] = message_id
    return msgspec.json.encode(
        {"message": message, "subscription": "projects/p/subscriptions/s", **extra}
    )


def without(raw: bytes, *names: str) -> bytes:
    fields = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
    for name in names:
        del fields[name]
    return msgspec.json.encode(fields)


def decoded(body: bytes) -> PushMessage:
    result = decode_push(body)
    assert isinstance(result, PushMessage), result
    return result


def test_a_complete_event_passes_through_byte_for_byte() -> None:
    message = decoded(envelope(RESULT, attributes={"tenant_id": "acme"}))
    assert message.raw == RESULT
    assert message.filled == ()
    assert message.conflicts == ()
    assert message.message_id == "1234567890"
    assert message.subscription == "projects/p/subscriptions/s"


def test_event_id_defaults_to_the_message_id() -> None:
    message = decoded(envelope(without(RESULT, "event_id"), message_id="m-42"))
    assert message.filled == ("event_id",)
    event = parse_event(message.raw)
    assert isinstance(event, AnalysisResult)
    assert event.event_id == "m-42"


def test_a_null_event_id_counts_as_missing() -> None:
    raw = RESULT.replace(b'"event_id":"e1"', b'"event_id":null')
    event = parse_event(decoded(envelope(raw, message_id="m-7")).raw)
    assert isinstance(event, AnalysisResult)
    assert event.event_id == "m-7"


def test_the_body_event_id_wins_over_the_message_id_without_a_conflict() -> None:
    message = decoded(envelope(RESULT, message_id="m-1"))
    assert message.conflicts == ()
    event = parse_event(message.raw)
    assert isinstance(event, AnalysisResult)
    assert event.event_id == "e1"


def test_attributes_fill_in_missing_ids_and_the_payload_keeps_its_bytes() -> None:
    raw = without(RESULT, "tenant_id", "job_id", "analysis_type")
    attributes = {"tenant_id": "acme", "job_id": "j1", "analysis_type": "detect"}
    message = decoded(envelope(raw, attributes=attributes))
    assert set(message.filled) == {"tenant_id", "job_id", "analysis_type"}
    event = parse_event(message.raw)
    assert isinstance(event, AnalysisResult)
    assert (event.tenant_id, event.job_id, event.analysis_type) == (
        "acme",
        "j1",
        "detect",
    )
    assert event.payload == b'{"score": 0.50, "boxes": [ 1, 2 ]}'


def test_the_body_wins_on_conflict_and_the_conflict_is_reported() -> None:
    attributes = {"tenant_id": "other", "job_id": "j1", "analysis_type": "caption"}
    message = decoded(envelope(RESULT, attributes=attributes))
    assert message.raw == RESULT
    assert set(message.conflicts) == {"tenant_id", "analysis_type"}
    event = parse_event(message.raw)
    assert isinstance(event, AnalysisResult)
    assert (event.tenant_id, event.analysis_type) == ("acme", "detect")


def test_filling_and_conflicts_together() -> None:
    raw = without(RESULT, "job_id")
    message = decoded(
        envelope(raw, attributes={"job_id": "j9", "tenant_id": "someone-else"})
    )
    assert message.filled == ("job_id",)
    assert message.conflicts == ("tenant_id",)
    event = parse_event(message.raw)
    assert isinstance(event, AnalysisResult)
    assert (event.tenant_id, event.job_id) == ("acme", "j9")


def test_analysis_type_is_not_added_to_a_job_opened() -> None:
    opened = (
        b'{"type":"job.opened","tenant_id":"acme","job_id":"j1",'
        b'"required":["detect"],"at":"2026-01-01T00:00:00Z"}'
    )
    message = decoded(envelope(opened, attributes={"analysis_type": "detect"}))
    assert message.filled == ("event_id",)
    assert b"analysis_type" not in message.raw
    assert isinstance(parse_event(message.raw), JobOpened)


def test_unrelated_attributes_are_ignored() -> None:
    message = decoded(envelope(RESULT, attributes={"googclient_schema": "x"}))
    assert message.raw == RESULT


def test_merge_leaves_input_that_is_not_a_json_object_alone() -> None:
    for data in (b"not json", b"[1, 2]", b'"text"', b"\xff\xfe"):
        raw, filled, conflicts = merge_envelope(
            data, message_id="m", attributes={"tenant_id": "acme"}
        )
        assert (raw, filled, conflicts) == (data, (), ())


def test_bad_base64_is_a_rejection_that_keeps_the_ids_the_envelope_gives() -> None:
    result = decode_push(
        envelope("not base64!!", attributes={"tenant_id": "acme", "job_id": "j1"})
    )
    assert isinstance(result, Rejection)
    assert "base64" in result.reason
    assert result.raw == b"not base64!!"
    assert (result.event_id, result.tenant_id, result.job_id) == (
        "1234567890",
        "acme",
        "j1",
    )


def test_a_redelivered_bad_message_has_the_same_rejection_id() -> None:
    first = decode_push(envelope("%%%", message_id="m1"))
    again = decode_push(envelope("%%%", message_id="m1", deliveryAttempt=2))
    assert isinstance(first, Rejection)
    assert isinstance(again, Rejection)
    assert first.rejection_id == again.rejection_id


def test_ids_from_attributes_that_are_not_usable_are_left_out() -> None:
    result = decode_push(envelope("***", attributes={"tenant_id": "a/b"}))
    assert isinstance(result, Rejection)
    assert result.tenant_id is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"subscription": "s"}',
        b'{"message": "text"}',
        b'{"message": {"data": 5}}',
        b'{"message": {"attributes": {"a": 1}}}',
    ],
)
def test_a_body_that_is_not_a_push_envelope_is_a_rejection(body: bytes) -> None:
    result = decode_push(body)
    assert isinstance(result, Rejection)
    assert result.reason.startswith("not a Pub/Sub push envelope")
    assert result.raw == body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"type": "analysis.result", "event_id": ', "not valid JSON"),
        (without(RESULT, "payload"), "missing required field `payload`"),
        (b"", "not valid JSON"),
    ],
)
def test_bad_events_inside_a_good_envelope_are_refused_by_validation(
    data: bytes, reason: str
) -> None:
    message = decoded(envelope(data))
    rejection = parse_event(message.raw)
    assert isinstance(rejection, Rejection)
    assert reason in rejection.reason


def test_a_message_without_data_is_an_empty_event() -> None:
    message = decoded(envelope(None))
    assert message.raw == b""


def test_split_one_event() -> None:
    assert split_events(b'  {"a": 1}\n') == [b'{"a": 1}']


def test_split_a_pretty_printed_event_is_one_event() -> None:
    body = b'{\n  "a": 1,\n  "b": [1, 2]\n}\n'
    assert split_events(body) == [body.strip()]


def test_split_a_json_array_keeps_each_element_byte_for_byte() -> None:
    body = b'[{"a": 1.50}, {"b":[ 2 ]},\n 3]'
    assert split_events(body) == [b'{"a": 1.50}', b'{"b":[ 2 ]}', b"3"]


def test_split_json_lines_skips_blank_lines_and_carriage_returns() -> None:
    body = b'{"a": 1}\r\n\n{"b": 2}\n  \n{"c": 3'
    assert split_events(body) == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3']


def test_split_by_content_type_treats_even_one_value_as_lines() -> None:
    body = b'{\n"a": 1}'
    assert split_events(body, "application/x-ndjson") == [b"{", b'"a": 1}']


def test_split_a_broken_array_is_one_rejection() -> None:
    result = split_events(b'[{"a": 1}, {"b": ')
    assert isinstance(result, Rejection)
    assert "not a valid JSON array" in result.reason


def test_split_an_empty_body_is_nothing() -> None:
    assert split_events(b"  \n ") == []
    assert split_events(b"[]") == []


def test_no_token_configured_lets_everyone_in() -> None:
    assert authorize(None, authorization=None, query_token=None) is Auth.OK


@pytest.mark.parametrize(
    ("authorization", "query_token", "expected"),
    [
        (None, None, Auth.MISSING),
        ("", "", Auth.MISSING),
        ("Basic c2VjcmV0", None, Auth.MISSING),
        ("Bearer ", None, Auth.MISSING),
        ("Bearer s3cret", None, Auth.OK),
        ("bearer s3cret", None, Auth.OK),
        (None, "s3cret", Auth.OK),
        ("Bearer wrong", None, Auth.WRONG),
        (None, "wrong", Auth.WRONG),
        ("Bearer s3cret-and-more", None, Auth.WRONG),
        # An OIDC token from Pub/Sub beside the shared query token.
        ("Bearer eyJhbGciOi.jwt.sig", "s3cret", Auth.OK),
        ("Bearer s3cret", "wrong", Auth.OK),
    ],
)
def test_token_checks(
    authorization: str | None, query_token: str | None, expected: Auth
) -> None:
    assert (
        authorize("s3cret", authorization=authorization, query_token=query_token)
        is expected
    )


def test_routing_follows_the_job_and_falls_back_to_the_raw_bytes() -> None:
    event = parse_event(RESULT)
    assert isinstance(event, AnalysisResult)
    assert shard_for(event, RESULT, 4) == shard_of("acme", "j1", 4)
    known = parse_event(RESULT.replace(b'"part":0', b'"part":"zero"'))
    assert isinstance(known, Rejection)
    assert shard_for(known, b"x", 4) == shard_of("acme", "j1", 4)
    unknown = parse_event(b"garbage")
    assert isinstance(unknown, Rejection)
    assert shard_for(unknown, b"garbage", 4) == raw_shard(b"garbage", 4)
