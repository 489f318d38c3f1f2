"""A shard proxy's state: an outbox of accepted events, grouped by job.

The proxy acknowledges a batch as soon as its events are in the outbox (which
is workflow state, so durable), then delivers them to their jobs in the
background, many jobs per delivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import msgspec

from actors.rules.job import RollupDelta
from wire.events import AnalysisResult, Event, JobOpened, event_json, semantic_error
from wire.validate import DEFAULT_MAX_PAYLOAD_BYTES, Rejection, reject

# Event ids (per job) remembered for de-duplication at the proxy. The job workflows are
# the authority on duplicates; this window only spares them the obvious
# redeliveries and lets the proxy report them to the sender.
RECENT_EVENT_IDS = 10_000

# Jobs a proxy remembers having delivered to (see ``ProxyState.delivered``):
# at 20,000 events/min over 4 shards about 3 minutes of one shard's jobs, and
# at most about 500 KiB (before compression) in the state a run carries into
# the next even with 128-character tenant and job ids.
DELIVERED_JOBS = 2_000

# Held events (``event_bytes``) a proxy may carry into its next run when it
# continues as new; past this it first delivers its oldest held jobs. With the
# de-duplication window and the delivered jobs beside it, the next run's input
# stays well under Temporal's 2 MiB payload limit.
CARRY_BYTES = 1 << 20

# Defaults of ProxySettings, which the worker's settings read from here.
DEFAULT_MAX_PENDING = 50_000
DEFAULT_DELIVERY_BATCH = 2_000
DEFAULT_MAX_DELIVERIES = 4
DEFAULT_ROLLUP_INTERVAL_S = 5.0
# Analysis services send a job's results over tens of seconds: held until
# they complete the job (or this long), a job costs about one delivery, where
# a short hold costs it one per event (BENCHMARKS.md, "The fourth lever").
DEFAULT_HOLD_S = 30.0


class ProxySettings(msgspec.Struct, frozen=True, kw_only=True):
    shard: int
    shards: int
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    # Past this many undelivered events the proxy refuses new batches (the
    # sender retries later) instead of growing without bound.
    max_pending: int = DEFAULT_MAX_PENDING
    # Events and payload bytes per delivery activity (Temporal refuses
    # payloads over 2 MiB), and how many deliveries run at once.
    delivery_batch: int = DEFAULT_DELIVERY_BATCH
    delivery_bytes: int = 1 << 20
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    continue_as_new_after: int | None = None
    # Tenant rollups are gathered here and reported at most this often, one
    # update per tenant: rollups are off every job's path, and a tenant's
    # update rate does not grow with its traffic.
    rollup_interval_s: float = DEFAULT_ROLLUP_INTERVAL_S
    # Longest a job's queued events wait for the rest of the job before they
    # are delivered anyway (a job whose events are all queued goes at once).
    hold_s: float = DEFAULT_HOLD_S


class IngestBatch(msgspec.Struct, frozen=True, kw_only=True):
    """The proxy update's input: parsed events and inputs refused at the edge."""

    events: list[Event] = msgspec.field(default_factory=list)
    rejections: list[Rejection] = msgspec.field(default_factory=list)
    # The W3C ``traceparent`` of the span that sent the batch, when traced
    # (see ``wire.traces``).
    trace: str | None = None


class IngestAck(msgspec.Struct, frozen=True, kw_only=True):
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


class JobDelivery(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    tenant_id: str
    job_id: str
    events: list[Event]
    # The traceparents of the batches these events came in, when traced.
    traces: list[str] = msgspec.field(default_factory=list)
    # When the oldest of these events reached the proxy (None: not known, as
    # for events put back after a failed delivery). A job's first delivery
    # carries its first event's arrival, which its deadline counts from.
    queued_at: datetime | None = None


class ProxyState(msgspec.Struct, kw_only=True):
    # job key "{tenant}/{job}" -> events waiting for delivery, in arrival order
    outbox: dict[str, list[Event]] = msgspec.field(default_factory=dict)
    pending: int = 0
    rejections: list[Rejection] = msgspec.field(default_factory=list)
    recent: dict[str, None] = msgspec.field(default_factory=dict)
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    # tenant -> rollups of written publications not yet reported
    rollups: dict[str, list[RollupDelta]] = msgspec.field(default_factory=dict)
    # job key -> when its oldest queued event was queued, oldest first (keys
    # without an entry, e.g. put back after a failed delivery, are due now)
    queued_at: dict[str, datetime] = msgspec.field(default_factory=dict)
    # job keys whose queued events alone make the job complete: job.opened
    # and every part of every required type
    complete: dict[str, None] = msgspec.field(default_factory=dict)
    # job key -> the traceparents of the batches its queued events came in
    # (traced batches only; at most TRACES_PER_JOB)
    traces: dict[str, list[str]] = msgspec.field(default_factory=dict)
    # job keys this proxy delivered to lately, oldest first (at most
    # DELIVERED_JOBS): their later events go at once (``follow_ups``), since
    # the job already holds the rest and waiting cannot make it one delivery
    delivered: dict[str, None] = msgspec.field(default_factory=dict)
    # What the outbox's events come to (``event_bytes``): what a
    # continue-as-new would carry of them (see CARRY_BYTES)
    held_bytes: int = 0


# Traceparents kept per held job: a delivery continues the first and links
# the rest.
TRACES_PER_JOB = 8


def job_key(tenant_id: str, job_id: str) -> str:
    # Ids cannot contain '/', so the key is unambiguous.
    return f"{tenant_id}/{job_id}"


def recent_key(event: Event) -> str:
    """What the proxy's de-duplication window remembers of an event: its id
    within its job, as the job does. Event ids need only be unique per job,
    so two jobs (of one tenant or of two) may both use an id; keyed by the
    id alone, one job's event was dropped as a duplicate of the other's."""
    return f"{job_key(event.tenant_id, event.job_id)}/{event.event_id}"


def ingest(
    state: ProxyState,
    batch: IngestBatch,
    settings: ProxySettings,
    *,
    now: datetime,
    follow_ups: bool = False,
    short_deadlines: bool = False,
) -> IngestAck:
    """Take a batch into the outbox at ``now``; never raises for bad events.

    Each job's queueing time and completeness are tracked for
    ``take(due=...)``. With ``follow_ups``, events for a job delivered to
    lately are due at once, like a complete job's. With ``short_deadlines``,
    so is a job whose ``job.opened`` gives it a deadline no longer than the
    hold: holding it would make it time out late.
    """
    accepted = duplicates = 0
    touched: dict[str, None] = {}
    rejected = len(batch.rejections)
    state.rejections.extend(batch.rejections)
    for event in batch.events:
        # Callers are trusted for nothing: the rules the schema cannot
        # express are checked again here.
        problem = semantic_error(event, max_payload_bytes=settings.max_payload_bytes)
        if problem is not None:
            state.rejections.append(reject(event_json(event), problem))
            rejected += 1
            continue
        key = recent_key(event)
        if key in state.recent:
            duplicates += 1
            continue
        state.recent[key] = None
        job = job_key(event.tenant_id, event.job_id)
        if job not in state.outbox:
            state.queued_at[job] = now
        state.outbox.setdefault(job, []).append(event)
        touched[job] = None
        state.pending += 1
        state.held_bytes += event_bytes(event)
        accepted += 1
    for job in touched:
        _judge(state, job, settings, follow_ups, short_deadlines)
        if batch.trace is not None:
            traces = state.traces.setdefault(job, [])
            if batch.trace not in traces and len(traces) < TRACES_PER_JOB:
                traces.append(batch.trace)
    excess = len(state.recent) - RECENT_EVENT_IDS
    if excess > 0:
        for key in list(state.recent)[:excess]:
            del state.recent[key]
    state.accepted += accepted
    state.duplicates += duplicates
    state.rejected += rejected
    return IngestAck(accepted=accepted, duplicates=duplicates, rejected=rejected)


def _judge(
    state: ProxyState,
    job: str,
    settings: ProxySettings,
    follow_ups: bool,
    short_deadlines: bool,
) -> None:
    """Mark ``job`` due at once when waiting for more of it gains nothing."""
    if job not in state.complete and (
        (follow_ups and job in state.delivered)
        or is_complete(state.outbox[job])
        or (short_deadlines and deadline_within(state.outbox[job], settings.hold_s))
    ):
        state.complete[job] = None


def reassess(
    state: ProxyState,
    settings: ProxySettings,
    *,
    follow_ups: bool,
    short_deadlines: bool,
) -> None:
    """Judge every held job again, as ``ingest`` would now: for batches
    taken in before the proxy knew its patches or its settings."""
    for job in state.outbox:
        _judge(state, job, settings, follow_ups, short_deadlines)


def is_complete(events: list[Event]) -> bool:
    """Whether ``events`` alone make a job complete: its ``job.opened`` and
    every part of every type it requires. (The job decides for real; this
    only tells the proxy that waiting for more events gains nothing.)"""
    required: list[str] | None = None
    parts: dict[str, tuple[int, set[int]]] = {}
    for event in events:
        if isinstance(event, JobOpened):
            required = event.required
        elif isinstance(event, AnalysisResult):
            parts.setdefault(event.analysis_type, (event.parts, set()))[1].add(
                event.part
            )
    return required is not None and all(
        t in parts and len(parts[t][1]) >= parts[t][0] for t in required
    )


def deadline_within(events: list[Event], seconds: float) -> bool:
    """Whether a ``job.opened`` among ``events`` sets the job a deadline of
    at most ``seconds``."""
    return any(
        isinstance(event, JobOpened)
        and event.deadline_s is not None
        and event.deadline_s <= seconds
        for event in events
    )


def is_due(state: ProxyState, key: str, due: datetime | None) -> bool:
    """Whether a job's queued events should go: always without ``due``;
    otherwise once complete, or once queued at or before ``due``."""
    if due is None or key in state.complete:
        return True
    queued = state.queued_at.get(key)
    return queued is None or queued <= due


def next_due(state: ProxyState, busy: set[str]) -> datetime | None:
    """When the oldest queued job that is not busy was queued; None if every
    queued job is busy (or tracked by no time, and so due already)."""
    for key, queued in state.queued_at.items():
        if key not in busy:
            return queued
    return None


def any_due(state: ProxyState, busy: set[str], due: datetime | None) -> bool:
    """Whether ``take(due=due)`` would take anything."""
    if due is None:
        return any(key not in busy for key in state.outbox)
    if any(key not in busy for key in state.complete):
        return True
    for key, queued in state.queued_at.items():
        if queued > due:
            break
        if key not in busy:
            return True
    return len(state.queued_at) < len(state.outbox) and any(
        key not in busy and key not in state.queued_at for key in state.outbox
    )


def take(
    state: ProxyState,
    limit: int,
    busy: set[str],
    max_bytes: int | None = None,
    *,
    due: datetime | None = None,
    remember: bool = False,
) -> list[JobDelivery]:
    """Remove up to about ``limit`` events (and ``max_bytes`` of payload) for
    jobs not in ``busy``; at least one event whenever a job is free.

    A job's events go into one delivery in arrival order, and a job already
    being delivered to is skipped: each job has at most one update in flight
    from this proxy. Only a job whose events alone exceed the byte budget is
    split, its later events staying queued for the next delivery.

    With ``due``, only jobs that are complete or were queued at or before
    ``due`` are taken: the others wait for more of their events, so that a
    job gets one delivery (one workflow task) rather than one per trickle.
    With ``remember``, each job taken joins ``state.delivered`` (and the rest
    of a split job stays due at once).
    """
    budget = max_bytes if max_bytes is not None else float("inf")
    taken: list[JobDelivery] = []
    count = size = 0
    order = list(state.outbox)
    if due is not None:
        # Complete jobs first: waiting gains them nothing.
        order = list(state.complete) + [k for k in order if k not in state.complete]
    for key in order:
        if count >= limit or size >= budget:
            break
        if key in busy or not is_due(state, key, due):
            continue
        events = state.outbox[key]
        queued_at = state.queued_at.get(key)
        n = weight = 0
        for event in events:
            cost = len(getattr(event, "payload", b""))
            if n and size + weight + cost > budget:
                break
            n += 1
            weight += cost
        if taken and size + weight > budget:
            break
        if n == len(events):
            del state.outbox[key]
            state.queued_at.pop(key, None)
            traces = state.traces.pop(key, [])
        else:
            state.outbox[key] = events[n:]
            traces = list(state.traces.get(key, ()))
        state.complete.pop(key, None)
        if remember:
            remember_delivered(state, key)
            if n < len(events):
                state.complete[key] = None
        first = events[0]
        taken.append(
            JobDelivery(
                tenant_id=first.tenant_id,
                job_id=first.job_id,
                events=events[:n],
                traces=traces,
                queued_at=queued_at,
            )
        )
        count += n
        size += weight
        state.held_bytes -= sum(map(event_bytes, events[:n]))
    state.pending -= count
    return taken


def over_carry(state: ProxyState) -> bool:
    """Whether the held events are more than a continue-as-new may carry."""
    return state.held_bytes > CARRY_BYTES


def remember_delivered(state: ProxyState, key: str) -> None:
    """Note a delivery to ``key``, forgetting the oldest past DELIVERED_JOBS."""
    state.delivered.pop(key, None)
    state.delivered[key] = None
    # Per job delivered: drop the oldest without copying the keys.
    while len(state.delivered) > DELIVERED_JOBS:
        del state.delivered[next(iter(state.delivered))]


def take_rejections(state: ProxyState, max_bytes: int) -> list[Rejection]:
    """Remove the oldest rejections, up to about ``max_bytes`` of them (raw
    input and reason), and at least one.

    A delivery carries its rejections whole, and Temporal refuses a payload
    over 2 MiB: rejections that piled up while deliveries were busy go out
    over several deliveries instead of failing the proxy's workflow task.
    """
    size = n = 0
    for rejection in state.rejections:
        cost = len(rejection.raw) + len(rejection.reason)
        if n and size + cost > max_bytes:
            break
        n += 1
        size += cost
    taken, state.rejections = state.rejections[:n], state.rejections[n:]
    return taken


# What one workflow task of the proxy may carry to the server: the inputs of
# the ingest updates it was given (the worker echoes each one back, accepted or
# refused) and of the deliveries it starts. Temporal refuses a task completion
# over 4 MiB and terminates the workflow when it does, losing what it held.
# So each task accepts batches and starts deliveries within TASK_BYTES, and a
# batch holds at most MAX_BATCH_BYTES: Temporal gives a workflow at most 10
# updates at once, so one task's batches, refused ones included, come to at
# most 10 of them. (Sizes are counted as JSON; what travels is compressed.)
TASK_BYTES = 3 << 19
MAX_BATCH_BYTES = 200 << 10
# Ingest batches take at most this much of a task (its first batch is always
# accepted, however large), so that deliveries keep room.
TASK_INGEST_BYTES = 1 << 20
# A task starts no further delivery with less room than this left.
MIN_DELIVERY_ROOM = 128 << 10
# What an event or a rejection costs beyond its payload, raw input and ids:
# the encoding's framing and its other fields.
ITEM_OVERHEAD_BYTES = 64


def event_bytes(event: Event) -> int:
    """About what one event costs in a payload (payload, ids, framing)."""
    payload = getattr(event, "payload", b"")
    return (
        len(payload)
        + len(event.event_id)
        + len(event.tenant_id)
        + len(event.job_id)
        + ITEM_OVERHEAD_BYTES
    )


def rejection_bytes(rejection: Rejection) -> int:
    return len(rejection.raw) + len(rejection.reason) + ITEM_OVERHEAD_BYTES


def batch_bytes(batch: IngestBatch) -> int:
    return sum(map(event_bytes, batch.events)) + sum(
        map(rejection_bytes, batch.rejections)
    )


def deliveries_bytes(deliveries: list[JobDelivery], rejections: list[Rejection]) -> int:
    return sum(
        event_bytes(event) for delivery in deliveries for event in delivery.events
    ) + sum(map(rejection_bytes, rejections))


@dataclass
class TaskBudget:
    """The bytes one workflow task of the proxy has taken in and sent out.

    Kept per task (``task`` is the history length at the task's start, which
    replays identically); a new task starts from nothing. Workflow state only
    for the task at hand: it is never carried across continue-as-new.
    """

    task: int = -1
    ingested: int = 0
    delivered: int = 0

    def at(self, task: int) -> TaskBudget:
        if task != self.task:
            self.task, self.ingested, self.delivered = task, 0, 0
        return self

    @property
    def spent(self) -> int:
        return self.ingested + self.delivered

    def admits(self, size: int) -> bool:
        """Whether the task may accept a batch of ``size`` bytes more."""
        if self.spent == 0:
            return True
        return (
            self.ingested + size <= TASK_INGEST_BYTES
            and self.spent + size <= TASK_BYTES
        )

    def delivery_room(self) -> int | None:
        """The bytes another delivery may carry in this task; None: start no
        more deliveries in it (one already started here wakes the proxy
        again when it finishes, in a later task)."""
        room = TASK_BYTES - self.spent
        if self.delivered == 0:
            return max(room, MIN_DELIVERY_ROOM)
        return room if room >= MIN_DELIVERY_ROOM else None


def requeue(
    state: ProxyState, deliveries: list[JobDelivery], rejections: list[Rejection]
) -> None:
    """Put the contents of a failed delivery back, ahead of newer events."""
    for delivery in deliveries:
        key = job_key(delivery.tenant_id, delivery.job_id)
        newer = state.outbox.pop(key, [])
        state.outbox[key] = delivery.events + newer
        state.pending += len(delivery.events)
        state.held_bytes += sum(map(event_bytes, delivery.events))
        state.queued_at.pop(key, None)  # due at once
        if delivery.traces:
            traces = delivery.traces + state.traces.get(key, [])
            state.traces[key] = list(dict.fromkeys(traces))[:TRACES_PER_JOB]
    state.rejections[:0] = rejections


def gather_rollups(state: ProxyState, rollups: dict[str, list[RollupDelta]]) -> None:
    """Hold the rollups a delivery returned until the next report."""
    for tenant_id, deltas in rollups.items():
        state.rollups.setdefault(tenant_id, []).extend(deltas)


def take_rollups(state: ProxyState) -> dict[str, list[RollupDelta]]:
    """Everything held for the tenants, to report in one go."""
    rollups, state.rollups = state.rollups, {}
    return rollups


def restore_rollups(state: ProxyState, rollups: dict[str, list[RollupDelta]]) -> None:
    """Put back the rollups of a report that failed, ahead of newer ones."""
    for tenant_id, deltas in rollups.items():
        state.rollups[tenant_id] = deltas + state.rollups.get(tenant_id, [])


class ProxyView(msgspec.Struct, frozen=True, kw_only=True):
    """What an operator asks of a shard: how much it holds and for how long.

    The answer of the proxy's ``status`` query (``script.inspect shards``).
    """

    shard: int
    held_events: int  # accepted, not yet handed to a delivery
    held_rejections: int  # edge rejections not yet dead-lettered
    held_jobs: int
    oldest_held_at: datetime | None  # when the oldest held job was queued
    deliveries_in_flight: int
    events_in_flight: int
    draining: bool
    retired: bool
    # Totals since the shard's first run (carried across continue-as-new).
    accepted: int
    duplicates: int
    rejected: int


def view(
    state: ProxyState,
    settings: ProxySettings,
    *,
    deliveries_in_flight: int,
    events_in_flight: int,
    draining: bool,
    retired: bool,
) -> ProxyView:
    """The operator's view of a proxy (pure; the proxy's query calls it)."""
    return ProxyView(
        shard=settings.shard,
        held_events=state.pending,
        held_rejections=len(state.rejections),
        held_jobs=len(state.outbox),
        oldest_held_at=next(iter(state.queued_at.values()), None),
        deliveries_in_flight=deliveries_in_flight,
        events_in_flight=events_in_flight,
        draining=draining,
        retired=retired,
        accepted=state.accepted,
        duplicates=state.duplicates,
        rejected=state.rejected,
    )


def held_for(state: ProxyState, key: str) -> list[str]:
    """The event ids a proxy holds for the job ``key``, in arrival order."""
    return [event.event_id for event in state.outbox.get(key, [])]
