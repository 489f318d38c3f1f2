"""Event schemas: what analysis services send.

Events are frozen, tagged msgspec Structs. The tag (the JSON ``type`` field) is
part of the public contract and never changes. Schema evolution follows
msgspec's rules: new fields get defaults, existing fields never change type.

Inside the system an analysis payload travels as the exact JSON bytes the
producer sent (``payload: bytes``): it is never parsed on the hot path, and it
lands in the result record byte for byte.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

ID_MAX_LENGTH = 128
# One pattern for every id: non-empty, no '/', no control characters (C0, DEL,
# C1) and no Unicode line or paragraph separators. A '/' would let an id escape
# its place in workflow ids such as ``job/{tenant}/{job}``; the others break
# logs, keys and file-based tools downstream. The end is ``\Z``, not ``$``:
# ``$`` also matches before a final newline, so "j1\n" would pass.
ID_PATTERN = r"^[^/\x00-\x1f\x7f-\x9f\u2028\u2029]+\Z"

Id = Annotated[
    str, msgspec.Meta(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)
]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
MAX_PARTS = 10_000
MAX_REQUIRED = 256


class JobOpened(
    msgspec.Struct, tag="job.opened", tag_field="type", frozen=True, kw_only=True
):
    """Declares which analysis types a job needs before it is complete."""

    event_id: Id
    tenant_id: Id
    job_id: Id
    required: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_REQUIRED)]
    at: Timestamp
    # Seconds of workflow time, counted from the job's first event, before the job
    # gives up waiting and emits a timed-out result.
    deadline_s: Annotated[float, msgspec.Meta(gt=0)] | None = None


class AnalysisResult(
    msgspec.Struct, tag="analysis.result", tag_field="type", frozen=True, kw_only=True
):
    """Part ``part`` (0-based) of ``parts`` for one analysis type of one job."""

    event_id: Id
    tenant_id: Id
    job_id: Id
    analysis_type: Id
    part: Annotated[int, msgspec.Meta(ge=0)]
    parts: Annotated[int, msgspec.Meta(ge=1, le=MAX_PARTS)]
    # The payload object's JSON text, exactly as received.
    payload: bytes
    at: Timestamp


Event = JobOpened | AnalysisResult


def semantic_error(event: Event, *, max_payload_bytes: int) -> str | None:
    """Cross-field rules a schema cannot express; None when the event is fine.

    Used at the edge and again by the proxy, which must not trust its callers.
    """
    match event:
        case AnalysisResult(part=part, parts=parts) if part >= parts:
            return (
                f"part {part} is outside 0..{parts - 1} (parts={parts}) - at `$.part`"
            )
        case AnalysisResult(payload=payload) if len(payload) > max_payload_bytes:
            return (
                f"payload is {len(payload)} bytes, over the limit of "
                f"{max_payload_bytes} - at `$.payload`"
            )
        case JobOpened(required=required) if len(set(required)) != len(required):
            return "required lists an analysis type twice - at `$.required`"
    return None


_json = msgspec.json.Encoder()


def event_json(event: Event) -> bytes:
    """The event in its JSON form, as a producer would have sent it."""
    fields = {"type": type(event).__struct_config__.tag}
    fields.update(msgspec.structs.asdict(event))
    if isinstance(event, AnalysisResult):
        fields["payload"] = msgspec.Raw(event.payload)
    return _json.encode(fields)
