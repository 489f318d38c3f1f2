"""The wire: event and record schemas, edge validation, the data converter.

(Named ``wire`` rather than ``codecs``: a top-level package called ``codecs``
can never be imported, because the interpreter loads the standard library's
``codecs`` module at start-up, before any project path is searched.)
"""

from wire._converter import DATA_CONVERTER, MsgspecPayloadConverter, ZstdPayloadCodec
from wire.events import (
    ID_PATTERN,
    AnalysisResult,
    Event,
    JobOpened,
    event_json,
    semantic_error,
)
from wire.records import (
    RECORD_KINDS,
    SCHEMA_VERSION,
    DeadLetter,
    JobResult,
    Record,
    TenantSummary,
    decode_record,
    encode_record,
    raw_text,
    record_id,
    record_kind,
)
from wire.validate import Limits, Rejection, parse_event, reject, rejection_id

__all__ = [
    "DATA_CONVERTER",
    "ID_PATTERN",
    "RECORD_KINDS",
    "SCHEMA_VERSION",
    "AnalysisResult",
    "DeadLetter",
    "Event",
    "JobOpened",
    "JobResult",
    "Limits",
    "MsgspecPayloadConverter",
    "Record",
    "Rejection",
    "TenantSummary",
    "ZstdPayloadCodec",
    "decode_record",
    "encode_record",
    "event_json",
    "parse_event",
    "raw_text",
    "record_id",
    "record_kind",
    "reject",
    "rejection_id",
    "semantic_error",
]
