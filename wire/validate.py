"""Edge validation: raw bytes in, a typed event or a rejection out.

Every entry point (the emitter, the HTTP ingress) parses input with
``parse_event``. It never raises for bad input: whatever is wrong comes back as
a ``Rejection`` carrying a precise reason and the raw input, which the proxy
turns into a ``dead_letter`` record.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from wire.events import ID_MAX_LENGTH, AnalysisResult, Event, JobOpened, semantic_error

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
DEFAULT_MAX_PAYLOAD_DEPTH = 64
# Raw input kept in a dead letter is capped: the record must fit through Temporal
# (2 MiB per payload) and a sink; the reason says what was wrong anyway.
RAW_KEEP_BYTES = 64 * 1024
# A reason can quote the input (msgspec quotes an unknown ``type`` value whole,
# up to the event limit). It is capped so that it stays a reason: otherwise it
# grows a rejection past the raw input it describes, which batches count at
# RAW_KEEP_BYTES at most, and a burst of such rejections overflows Temporal's
# 2 MiB payload limit in the proxy (whose workflow tasks then fail for good).
MAX_REASON_CHARS = 1024


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Input limits, shared by every entry point and the proxy."""

    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    # Nesting levels of arrays and objects in a payload, the payload object
    # itself included. Records are read back by JSON decoders that recurse
    # (msgspec and Python's json stop near 1,000 levels), so a payload must
    # stay well inside that; analysis results need a handful of levels.
    max_payload_depth: int = DEFAULT_MAX_PAYLOAD_DEPTH

    @property
    def max_event_bytes(self) -> int:
        # Room for the envelope around the largest allowed payload.
        return self.max_payload_bytes + 8 * 1024


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """An input refused at the edge, ready to become a dead letter."""

    rejection_id: str  # stable for the same bytes: redeliveries dead-letter once
    reason: str
    raw: bytes  # at most RAW_KEEP_BYTES of the input
    raw_truncated: bool = False
    event_id: str | None = None
    tenant_id: str | None = None
    job_id: str | None = None


class _AnalysisResultJSON(
    msgspec.Struct, tag="analysis.result", tag_field="type", frozen=True, kw_only=True
):
    # The edge twin of AnalysisResult: the payload stays raw JSON, unparsed.
    event_id: Any
    tenant_id: Any
    job_id: Any
    analysis_type: Any
    part: Any
    parts: Any
    payload: msgspec.Raw
    at: Any


class _Ids(msgspec.Struct):
    # Best-effort ids of an invalid event, for the dead letter.
    event_id: Any = None
    tenant_id: Any = None
    job_id: Any = None


_events = msgspec.json.Decoder(JobOpened | _AnalysisResultJSON)
_ids = msgspec.json.Decoder(_Ids)
_result_convert = msgspec.convert


def rejection_id(raw: bytes) -> str:
    """A stable id for a rejected input: the same bytes give the same id."""
    return "raw-" + hashlib.sha256(raw).hexdigest()[:40]


def reject(raw: bytes, reason: str) -> Rejection:
    """A rejection of ``raw`` with the ids that can be read from it."""
    ids = _Ids()
    if len(raw) <= RAW_KEEP_BYTES * 4:
        # ValidationError is a DecodeError; the others come from broken UTF-8
        # and absurd nesting.
        with contextlib.suppress(
            msgspec.DecodeError, UnicodeDecodeError, RecursionError
        ):
            ids = _ids.decode(raw)

    def usable(value: Any) -> str | None:
        if isinstance(value, str) and 0 < len(value) <= ID_MAX_LENGTH:
            return value
        return None

    reason = cap_reason(reason)
    return Rejection(
        rejection_id=rejection_id(raw),
        reason=reason,
        raw=raw[:RAW_KEEP_BYTES],
        raw_truncated=len(raw) > RAW_KEEP_BYTES,
        event_id=usable(ids.event_id),
        tenant_id=usable(ids.tenant_id),
        job_id=usable(ids.job_id),
    )


def cap_reason(reason: str) -> str:
    """A dead letter's reason, cut to MAX_REASON_CHARS (ending in ``...``)."""
    if len(reason) > MAX_REASON_CHARS:
        return reason[: MAX_REASON_CHARS - 3] + "..."
    return reason


def _friendly(message: str) -> str:
    # msgspec reports the id pattern as a regex, and an unknown tag as an
    # "invalid value"; say what they mean instead.
    if message.startswith("Invalid value") and message.endswith("`$.type`"):
        return "unknown event type " + message.removeprefix("Invalid value ")
    if "matching regex" in message:
        at = message.partition(" - ")[2]
        return "ids must be 1-128 characters with no '/' and no control characters" + (
            f" - {at}" if at else ""
        )
    return message


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def _deeper_than(payload: bytes, limit: int) -> bool:
    """Whether valid JSON ``payload`` nests arrays and objects deeper than
    ``limit``. Brackets inside strings do not count."""
    if payload.count(b"{") + payload.count(b"[") <= limit:
        return False  # the common case, at C speed
    depth = 0
    for bracket in _BRACKET.finditer(_JSON_STRING.sub(b"", payload)):
        if bracket.group() in (b"{", b"["):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def parse_event(raw: bytes, limits: Limits = Limits()) -> Event | Rejection:
    """Parse and validate one JSON event.

    Returns the typed event, or a Rejection saying exactly what was wrong and
    where (``$.part``, ``$.tenant_id``...).
    """
    if len(raw) > limits.max_event_bytes:
        return reject(
            raw,
            f"event is {len(raw)} bytes, over the limit of {limits.max_event_bytes}",
        )
    try:
        decoded = _events.decode(raw)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError
        return reject(raw, _friendly(str(exc)))
    except msgspec.DecodeError as exc:
        return reject(raw, f"not valid JSON: {exc}")
    except UnicodeDecodeError as exc:
        return reject(raw, f"not valid UTF-8: {exc.reason} at byte {exc.start}")
    except RecursionError:
        return reject(raw, "not valid JSON: nested too deeply")
    if isinstance(decoded, _AnalysisResultJSON):
        payload = bytes(decoded.payload)
        if not payload.lstrip().startswith(b"{"):
            return reject(raw, "Expected `object` - at `$.payload`")
        try:
            # msgspec skips over a Raw value without checking its strings.
            payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            return reject(
                raw, f"not valid UTF-8: {exc.reason} at byte {exc.start} of `$.payload`"
            )
        if _deeper_than(payload, limits.max_payload_depth):
            return reject(
                raw,
                f"payload nests deeper than {limits.max_payload_depth} levels"
                " - at `$.payload`",
            )
        try:
            event: Event = _result_convert(
                {
                    "event_id": decoded.event_id,
                    "tenant_id": decoded.tenant_id,
                    "job_id": decoded.job_id,
                    "analysis_type": decoded.analysis_type,
                    "part": decoded.part,
                    "parts": decoded.parts,
                    "payload": payload,
                    "at": decoded.at,
                },
                AnalysisResult,
                strict=True,
            )
        except msgspec.ValidationError as exc:
            return reject(raw, _friendly(str(exc)))
    else:
        event = decoded
    problem = semantic_error(event, max_payload_bytes=limits.max_payload_bytes)
    if problem is not None:
        return reject(raw, problem)
    return event
