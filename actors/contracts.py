"""Inputs and results of the workflows and activities.

One input type and one result type per workflow, update and activity: they
are the schema that must evolve compatibly (new fields get defaults).
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from temporalio.common import SearchAttributeKey

from actors import names
from actors.rules import job as job_rules
from actors.rules.job import (
    BatchAck,
    JobSettings,
    JobState,
    Publication,
    RollupDelta,
)
from actors.rules.proxy import JobDelivery, ProxySettings, ProxyState
from actors.rules.tenant import TenantSettings, TenantState
from wire.events import Event
from wire.records import TenantSummary
from wire.validate import Rejection

# The jobs' search attributes (see ``actors.names``), typed.
TENANT_KEY = SearchAttributeKey.for_keyword(names.TENANT_ATTRIBUTE)
STATUS_KEY = SearchAttributeKey.for_keyword(names.STATUS_ATTRIBUTE)
SEARCH_ATTRIBUTES = (TENANT_KEY, STATUS_KEY)


class ProxyInput(msgspec.Struct, frozen=True, kw_only=True):
    settings: ProxySettings
    state: ProxyState | None = None


class JobBatch(msgspec.Struct, frozen=True, kw_only=True):
    events: list[Event]
    # The job hands its publication back in the reply, for the delivery to
    # write, instead of publishing it itself. A retry carries the same id
    # and gets the same reply.
    delivery_id: str
    # When the oldest of these events reached the proxy (``JobDelivery.
    # queued_at``; None: not known). A job's first batch starts its deadline
    # from it (``rules.note_first_arrival``).
    first_queued_at: datetime | None = None


class JobInput(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    job_id: str
    settings: JobSettings = JobSettings()
    state: JobState | None = None
    # A job started eagerly by its first delivery carries that delivery's
    # batch, and the time the delivery took as the job's "now" for it
    # (``rules.started``); a continue-as-new carries ``state`` instead, and
    # a reopening (the next generation of a closed job) both: the closed
    # run's final state and the late batch (``rules.reopened``).
    batch: JobBatch | None = None
    batch_at: datetime | None = None


def started_state(input: JobInput) -> JobState | None:
    """The state a job starts with: ``input.state`` (a continue-as-new, or
    a reopening started by update-with-start), with the batch ``input``
    carries applied when there is one (``rules.reopened`` on a closed run's
    state; ``rules.started`` for a new job); None for a new job started
    empty. The job's ``__init__`` and the delivery that starts it both call
    this on the same input, so they agree on the reply without asking each
    other."""
    batch, at = input.batch, input.batch_at
    if batch is None or at is None:
        return input.state
    if input.state is not None:
        return job_rules.reopened(
            input.state,
            batch.events,
            delivery_id=batch.delivery_id,
            at=at,
            settings=input.settings,
        )
    return job_rules.started(
        input.tenant_id,
        input.job_id,
        batch.events,
        delivery_id=batch.delivery_id,
        first_queued_at=batch.first_queued_at,
        at=at,
        settings=input.settings,
    )


class JobOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a job workflow returns when it closes."""

    version: int
    status: str | None
    events: int
    # A job that reopens (``JobSettings.reopen``) closes with its state, for
    # a late event's delivery to start its next generation from.
    state: JobState | None = None


class TenantInput(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    settings: TenantSettings = TenantSettings()
    state: TenantState | None = None


class DeliverInput(msgspec.Struct, frozen=True, kw_only=True):
    deliveries: list[JobDelivery]
    rejections: list[Rejection]
    at: datetime
    # Unique per delivery activity, stable across its retries.
    delivery_id: str


class DeliverResult(msgspec.Struct, frozen=True, kw_only=True):
    ack: BatchAck
    # Events for jobs that had already closed; dead-lettered as too late.
    too_late: int = 0
    # Rollups of the publications written, per tenant, for the proxy to
    # report in batches.
    rollups: dict[str, list[RollupDelta]] = msgspec.field(default_factory=dict)


class ReportInput(msgspec.Struct, frozen=True, kw_only=True):
    """Rollups for several tenants, one tenant update each."""

    rollups: dict[str, list[RollupDelta]]


class PublishJobInput(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    job_id: str
    publication: Publication
    at: datetime


class PublishSummaryInput(msgspec.Struct, frozen=True, kw_only=True):
    summary: TenantSummary


class SettingsRequest(msgspec.Struct, frozen=True, kw_only=True):
    shard: int
    shards: int


class CatchUpInput(msgspec.Struct, frozen=True, kw_only=True):
    """Records one sink of a fan-out still has to take (it was down when the
    others took them): the sink's name, and the records as the activity
    side encoded them (``sinks.SinkRecord`` in MessagePack; the workflow
    only hands them on)."""

    sink: str
    records: bytes
    count: int
