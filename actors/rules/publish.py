"""Turning what the workflows decided into records."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from actors.rules.job import Publication, refusal_id, result_id
from wire.events import event_json
from wire.records import DeadLetter, JobResult, Record, raw_text
from wire.validate import Rejection


def _iso(at: datetime) -> str:
    return at.isoformat()


def job_records(
    publication: Publication, pipeline: Callable[[Any], Any], at: datetime
) -> list[Record]:
    """The result version (if any) and dead letters of one job publication."""
    records: list[Record] = []
    snapshot = publication.snapshot
    if snapshot is not None:
        records.append(
            JobResult(
                result_id=result_id(
                    snapshot.tenant_id, snapshot.job_id, snapshot.version
                ),
                tenant_id=snapshot.tenant_id,
                job_id=snapshot.job_id,
                version=snapshot.version,
                status=snapshot.status,
                events=snapshot.events,
                analyses=pipeline(snapshot),
                required=snapshot.required,
                missing=snapshot.missing(),
                opened_at=None if snapshot.opened is None else _iso(snapshot.opened.at),
                completed_at=_iso(snapshot.completed_at),
            )
        )
    for refusal in publication.refusals:
        event = refusal.event
        raw, encoding = raw_text(event_json(event))
        records.append(
            DeadLetter(
                dead_letter_id=refusal_id(
                    event.tenant_id, event.job_id, event.event_id
                ),
                reason=refusal.reason,
                source="job",
                raw=raw,
                raw_encoding=encoding,
                event_id=event.event_id,
                tenant_id=event.tenant_id,
                job_id=event.job_id,
                at=_iso(at),
            )
        )
    return records


def rejection_records(
    rejections: Iterable[Rejection], at: datetime, source: str = "edge"
) -> list[DeadLetter]:
    """Dead letters for inputs refused before they reached a job."""
    records = []
    for rejection in rejections:
        raw, encoding = raw_text(rejection.raw)
        records.append(
            DeadLetter(
                dead_letter_id=rejection.rejection_id,
                reason=rejection.reason,
                source=source,
                raw=raw,
                raw_encoding=encoding,
                raw_truncated=rejection.raw_truncated,
                event_id=rejection.event_id,
                tenant_id=rejection.tenant_id,
                job_id=rejection.job_id,
                at=_iso(at),
            )
        )
    return records


def too_late_records(
    events: Iterable[Any], reason: str, at: datetime
) -> list[DeadLetter]:
    """Dead letters for events whose job had already closed."""
    records = []
    for event in events:
        raw, encoding = raw_text(event_json(event))
        records.append(
            DeadLetter(
                dead_letter_id=refusal_id(
                    event.tenant_id, event.job_id, event.event_id
                ),
                reason=reason,
                source="job",
                raw=raw,
                raw_encoding=encoding,
                event_id=event.event_id,
                tenant_id=event.tenant_id,
                job_id=event.job_id,
                at=_iso(at),
            )
        )
    return records
