"""Record schemas: what the system writes to its sink (the "tables").

Every record is one JSON object with a ``type`` field and a ``schema_version``.
Each kind has a stable key (``result_id``, ``summary_id``, ``dead_letter_id``):
a sink writes a given key at most once, so consumers can merge on it the way a
dbt incremental model merges on its ``unique_key``.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import msgspec

SCHEMA_VERSION = 1

JobStatus = Literal["complete", "timed_out", "amended"]


class JobResult(
    msgspec.Struct, tag="job.result", tag_field="type", kw_only=True, frozen=True
):
    """One version of a job's result.

    Version 1 is written when the job completes or times out; every later
    version (status ``amended``) includes everything before it plus the events
    that arrived late.
    """

    result_id: str  # "{tenant}/{job}/{version}"
    tenant_id: str
    job_id: str
    version: int
    status: JobStatus
    events: int  # unique accepted events, job.opened included
    analyses: Any  # the pipeline's output
    required: list[str] | None
    # Parts still missing per analysis type; empty when the job is complete.
    missing: dict[str, list[int]]
    opened_at: str | None
    completed_at: str
    schema_version: int = SCHEMA_VERSION


class TenantSummary(
    msgspec.Struct, tag="tenant.summary", tag_field="type", kw_only=True, frozen=True
):
    """A tenant's rollup over one window ``[window_start, window_end)``."""

    summary_id: str  # "{tenant}/{window_start}"
    tenant_id: str
    window_start: str
    window_end: str
    jobs_completed: int
    jobs_timed_out: int
    jobs_amended: int
    events: int
    analyses: dict[str, int]  # accepted analysis.result events per type
    dead_letters: int
    schema_version: int = SCHEMA_VERSION


class DeadLetter(
    msgspec.Struct, tag="dead_letter", tag_field="type", kw_only=True, frozen=True
):
    """An input the system refused, with the reason and the input itself."""

    dead_letter_id: str
    reason: str
    source: str  # where it was refused: "edge", "proxy" or "job"
    raw: str  # the input as text, or base64 when raw_encoding is "base64"
    raw_encoding: Literal["utf-8", "base64"] = "utf-8"
    raw_truncated: bool = False
    event_id: str | None = None
    tenant_id: str | None = None
    job_id: str | None = None
    at: str
    schema_version: int = SCHEMA_VERSION


Record = JobResult | TenantSummary | DeadLetter
RECORD_KINDS: tuple[str, ...] = ("job.result", "tenant.summary", "dead_letter")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)


def record_kind(record: Record) -> str:
    """The record's ``type`` tag."""
    return type(record).__struct_config__.tag  # type: ignore[return-value]


def record_id(record: Record) -> str:
    """The record's stable key."""
    match record:
        case JobResult(result_id=key) | TenantSummary(summary_id=key):
            return key
        case DeadLetter(dead_letter_id=key):
            return key
    raise TypeError(f"not a record: {type(record).__name__}")


def encode_record(record: Record) -> bytes:
    """The record as one compact JSON object (no trailing newline)."""
    return _encoder.encode(record)


def decode_record(data: bytes | str) -> Record:
    """Parse one JSON record; raises msgspec.ValidationError on a bad one."""
    return _decoder.decode(data)


def raw_text(raw: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    """Render raw input for a dead letter: text when it is UTF-8, else base64."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"
