"""One job's state: join, completeness, de-duplication, late events.

The job collects ``analysis.result`` parts per analysis type until every type
its ``job.opened`` requires has all of its parts, then publishes version 1 of
its result. Anything accepted after that publishes an amended version that
includes it. A job that is not complete by its deadline publishes what it has
as ``timed_out``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from wire.events import AnalysisResult, Event, JobOpened
from wire.records import JobStatus

ACCEPTED = "accepted"
REJECTED = "rejected"

# Defaults of JobSettings, which the worker's settings read from here.
DEFAULT_DEADLINE_S = 3600.0
DEFAULT_LINGER_S = 3600.0


class JobSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Per-job behaviour, fixed when the job starts and carried across runs."""

    default_deadline_s: float = DEFAULT_DEADLINE_S
    # How long after its last publication a job still takes late events;
    # events after that are dead-lettered as too late.
    linger_s: float = DEFAULT_LINGER_S
    # True: a job that has published everything closes at once, its result
    # carrying its state, and a late event within ``linger_s`` reopens it in
    # a run of its own (the next generation, ``routing.job_run_id``). False
    # (what jobs started before reopening carry): the job stays open, a
    # timer running, for ``linger_s``.
    reopen: bool = False
    # Continue-as-new once the run's history reaches this many events, even if
    # Temporal has not suggested it yet. None: only when suggested.
    continue_as_new_after: int | None = None
    # Payload bytes one job may hold. A job's data travels whole in its state
    # (carried across continue-as-new, with the last publication beside it)
    # and in its publication, and Temporal refuses payloads over 2 MiB; parts
    # past this cap are dead-lettered rather than let workflow tasks fail.
    max_job_bytes: int = 768 * 1024


class Slot(msgspec.Struct, kw_only=True):
    """The parts of one analysis type collected so far."""

    parts: int
    events: list[AnalysisResult | None]
    filled: int = 0


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    """An event the job refused; it becomes a dead letter."""

    event: Event
    reason: str


class JobState(msgspec.Struct, kw_only=True):
    """Everything a job knows; carried whole across continue-as-new."""

    tenant_id: str
    job_id: str
    first_seen: datetime
    opened: JobOpened | None = None
    slots: dict[str, Slot] = msgspec.field(default_factory=dict)
    # Every event id the job has seen, with what became of it: a redelivery of
    # any of them (accepted or refused) is a duplicate.
    outcomes: dict[str, str] = msgspec.field(default_factory=dict)
    # Bumped on every change to what the result would contain.
    changes: int = 0
    published_changes: int = 0
    version: int = 0
    publications: int = 0
    last_status: JobStatus | None = None
    last_published_at: datetime | None = None
    published_events: int = 0
    published_types: dict[str, int] = msgspec.field(default_factory=dict)
    refusals: list[Refusal] = msgspec.field(default_factory=list)
    payload_bytes: int = 0
    # The last delivery and what it was answered, so that a retried delivery
    # (same id) gets the same answer, publication included, even after
    # continue-as-new. One is enough: a proxy sends a job its next delivery
    # only once the previous one is written.
    last_delivery: Reply | None = None
    # Which run of the job holds this state: 0 for the first, one more for
    # each reopening (``reopened``; its workflow id is
    # ``routing.job_run_id(tenant_id, job_id, generation)``).
    generation: int = 0


class BatchAck(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one delivered batch of events."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to one delivery: what became of its events and, when they
    completed or amended the job, the publication for the caller to write."""

    delivery_id: str
    ack: BatchAck
    publication: Publication | None = None


class JobSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A job's collected data at one version: the pipeline's input."""

    tenant_id: str
    job_id: str
    version: int
    status: JobStatus
    opened: JobOpened | None
    slots: dict[str, Slot]
    events: int
    completed_at: datetime

    @property
    def required(self) -> list[str] | None:
        return None if self.opened is None else list(self.opened.required)

    def missing(self) -> dict[str, list[int]]:
        """Parts not yet received, per required (or seen) analysis type."""
        types = self.required if self.required is not None else list(self.slots)
        missing: dict[str, list[int]] = {}
        for analysis_type in types:
            slot = self.slots.get(analysis_type)
            if slot is None:
                missing[analysis_type] = []  # not one part seen: count unknown
            elif slot.filled < slot.parts:
                missing[analysis_type] = [
                    i for i, event in enumerate(slot.events) if event is None
                ]
        return missing


class RollupDelta(msgspec.Struct, frozen=True, kw_only=True):
    """What one published result version adds to its tenant's rollup."""

    # Unique per publication and stable under retries: the tenant counts each
    # key once.
    key: str
    job_id: str
    status: JobStatus | None  # None: refusals only, no new result version
    events: int
    analyses: dict[str, int]
    dead_letters: int


class Publication(msgspec.Struct, frozen=True, kw_only=True):
    """What the job must write now: a result version, refusals, or both."""

    snapshot: JobSnapshot | None
    refusals: list[Refusal]
    rollup: RollupDelta
    changes: int  # the state's change counter this publication covers


def new_job(tenant_id: str, job_id: str, now: datetime) -> JobState:
    return JobState(tenant_id=tenant_id, job_id=job_id, first_seen=now)


def note_first_arrival(state: JobState, queued_at: datetime | None) -> None:
    """A job's deadline counts from its first event's arrival at the proxy.

    ``queued_at`` is when the oldest event of a batch reached the proxy (None:
    not known). Only a job's first batch moves ``first_seen`` (a job that
    holds no event yet: none applied, none refused), and only earlier: the
    proxy may hold a new job's events for up to its hold before delivering
    them, and the deadline must not move by that much.
    """
    if queued_at is not None and not state.outcomes and queued_at < state.first_seen:
        state.first_seen = queued_at


def receive(
    state: JobState,
    events: list[Event],
    *,
    delivery_id: str,
    first_queued_at: datetime | None,
    now: datetime,
    settings: JobSettings,
    publishing: bool = False,
) -> Reply:
    """Take a delivery's batch: apply its events and, unless a publication is
    already in flight (``publishing``), decide and commit what to publish at
    ``now``. The reply hands that publication to the delivery, which writes
    it; it is kept as ``last_delivery``, so that a retry gets it again."""
    note_first_arrival(state, first_queued_at)
    ack = apply_batch(state, events, max_job_bytes=settings.max_job_bytes)
    publication = None
    if not publishing:
        publication = decide(state, now, settings)
        if publication is not None:
            commit(state, publication, now)
    state.last_delivery = Reply(
        delivery_id=delivery_id, ack=ack, publication=publication
    )
    return state.last_delivery


def started(
    tenant_id: str,
    job_id: str,
    events: list[Event],
    *,
    delivery_id: str,
    first_queued_at: datetime | None,
    at: datetime,
    settings: JobSettings,
) -> JobState:
    """A job started with its first batch in its input (an eager start).

    A pure function of its arguments, all of which travel in the job's input:
    the delivery that starts the job computes the same reply from them as the
    job's first task does (its ``last_delivery``), so it needs no answer from
    the job to write the publication.
    """
    state = new_job(tenant_id, job_id, at)
    receive(
        state,
        events,
        delivery_id=delivery_id,
        first_queued_at=first_queued_at,
        now=at,
        settings=settings,
    )
    return state


def result_id(tenant_id: str, job_id: str, version: int) -> str:
    return f"{tenant_id}/{job_id}/{version}"


def refusal_id(tenant_id: str, job_id: str, event_id: str) -> str:
    """Dead-letter id of an event the job refused: one per event id."""
    return f"{tenant_id}/{job_id}/{event_id}"


def apply_batch(
    state: JobState, events: list[Event], *, max_job_bytes: int | None = None
) -> BatchAck:
    """Apply a batch of events in order; never raises for bad events."""
    accepted = duplicates = rejected = 0
    for event in events:
        outcome = apply_event(state, event, max_job_bytes=max_job_bytes)
        if outcome is None:
            duplicates += 1
        elif outcome == ACCEPTED:
            accepted += 1
        else:
            rejected += 1
    return BatchAck(accepted=accepted, duplicates=duplicates, rejected=rejected)


def apply_event(
    state: JobState, event: Event, *, max_job_bytes: int | None = None
) -> str | None:
    """Apply one event; returns ACCEPTED, REJECTED, or None for a duplicate."""
    if event.event_id in state.outcomes:
        return None
    if event.tenant_id != state.tenant_id or event.job_id != state.job_id:
        # The proxy routes by these ids, so this is a misrouted or forged
        # event: it must not touch this job's data.
        return _refuse(
            state,
            event,
            f"event is for {event.tenant_id}/{event.job_id}, "
            f"not for job {state.tenant_id}/{state.job_id}",
        )
    match event:
        case JobOpened():
            return _open(state, event)
        case AnalysisResult():
            return _add_part(state, event, max_job_bytes)


def _refuse(state: JobState, event: Event, reason: str) -> str:
    state.outcomes[event.event_id] = REJECTED
    state.refusals.append(Refusal(event=event, reason=reason))
    return REJECTED


def _open(state: JobState, event: JobOpened) -> str:
    if state.opened is not None:
        return _refuse(
            state, event, f"job was already opened by event {state.opened.event_id}"
        )
    state.opened = event
    state.outcomes[event.event_id] = ACCEPTED
    state.changes += 1
    # Parts that arrived before job.opened were held on trust; now we know
    # which types the job needs, refuse those it does not.
    required = set(event.required)
    for analysis_type in [t for t in state.slots if t not in required]:
        for held in state.slots.pop(analysis_type).events:
            if held is not None:
                state.payload_bytes -= len(held.payload)
                _refuse(state, held, _not_required(analysis_type, event.required))
    return ACCEPTED


def _not_required(analysis_type: str, required: list[str]) -> str:
    return (
        f"analysis type {analysis_type!r} is not required by this job "
        f"(required: {', '.join(required)}) - at `$.analysis_type`"
    )


def _add_part(state: JobState, event: AnalysisResult, max_job_bytes: int | None) -> str:
    if state.opened is not None and event.analysis_type not in state.opened.required:
        return _refuse(
            state, event, _not_required(event.analysis_type, state.opened.required)
        )
    slot = state.slots.get(event.analysis_type)
    if slot is None:
        slot = Slot(parts=event.parts, events=[None] * event.parts)
        state.slots[event.analysis_type] = slot
    elif slot.parts != event.parts:
        return _refuse(
            state,
            event,
            f"parts={event.parts} disagrees with parts={slot.parts} of earlier "
            f"{event.analysis_type!r} events - at `$.parts`",
        )
    holder = slot.events[event.part]
    if holder is not None:
        return _refuse(
            state,
            event,
            f"conflict: part {event.part} of {event.analysis_type!r} was already "
            f"filled by event {holder.event_id}",
        )
    if (
        max_job_bytes is not None
        and state.payload_bytes + len(event.payload) > max_job_bytes
    ):
        return _refuse(
            state,
            event,
            f"the job would hold more than {max_job_bytes} bytes of payloads "
            f"(it holds {state.payload_bytes}) - at `$.payload`",
        )
    slot.events[event.part] = event
    slot.filled += 1
    state.payload_bytes += len(event.payload)
    state.outcomes[event.event_id] = ACCEPTED
    state.changes += 1
    return ACCEPTED


def is_complete(state: JobState) -> bool:
    if state.opened is None:
        return False
    for analysis_type in state.opened.required:
        slot = state.slots.get(analysis_type)
        if slot is None or slot.filled < slot.parts:
            return False
    return True


def event_count(state: JobState) -> int:
    return (state.opened is not None) + sum(s.filled for s in state.slots.values())


def deadline(state: JobState, settings: JobSettings) -> datetime:
    seconds = settings.default_deadline_s
    if state.opened is not None and state.opened.deadline_s is not None:
        seconds = state.opened.deadline_s
    return state.first_seen + timedelta(seconds=seconds)


def closes_at(state: JobState, settings: JobSettings) -> datetime | None:
    """When a job with nothing left to publish may close; None before v1.

    A job that reopens closes as soon as it has published: the late events
    ``late_until`` allows start its next generation."""
    if state.last_published_at is None:
        return None
    if settings.reopen:
        return state.last_published_at
    return late_until(state, settings)


def late_until(state: JobState, settings: JobSettings) -> datetime | None:
    """Until when a job takes late events (None before v1): ``linger_s``
    after its last publication. Later ones are dead-lettered as too late."""
    if state.last_published_at is None:
        return None
    return state.last_published_at + timedelta(seconds=settings.linger_s)


def reopened(
    closed: JobState,
    events: list[Event],
    *,
    delivery_id: str,
    at: datetime,
    settings: JobSettings,
) -> JobState:
    """A closed job's next generation, started with a late batch: its
    state, the batch applied (``receive``). A pure function of its
    arguments, like ``started``, and it leaves ``closed`` as it was."""
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(closed), type=JobState)
    state.generation += 1
    receive(
        state,
        events,
        delivery_id=delivery_id,
        first_queued_at=None,
        now=at,
        settings=settings,
    )
    return state


def next_wakeup(state: JobState, settings: JobSettings) -> datetime | None:
    """The next time the job must act even if no event arrives."""
    if state.version == 0:
        return deadline(state, settings)
    return closes_at(state, settings)


def has_work(state: JobState) -> bool:
    """Is there anything to publish, short of the deadline passing?"""
    if state.refusals:
        return True
    if state.version == 0:
        return is_complete(state)
    return state.changes > state.published_changes


def decide(state: JobState, now: datetime, settings: JobSettings) -> Publication | None:
    """What to publish at ``now``, or None when there is nothing to do."""
    status: JobStatus | None = None
    if state.version == 0:
        if is_complete(state):
            status = "complete"
        elif now >= deadline(state, settings):
            status = "timed_out"
    elif state.changes > state.published_changes:
        status = "amended"
    if status is None and not state.refusals:
        return None
    snapshot = None
    events = state.published_events
    types = state.published_types
    if status is not None:
        version = state.version + 1
        snapshot = JobSnapshot(
            tenant_id=state.tenant_id,
            job_id=state.job_id,
            version=version,
            status=status,
            opened=state.opened,
            # Copies: the state keeps changing while the publication is written.
            slots={
                t: Slot(parts=s.parts, events=list(s.events), filled=s.filled)
                for t, s in state.slots.items()
            },
            events=event_count(state),
            completed_at=now,
        )
        events = snapshot.events
        types = {t: s.filled for t, s in state.slots.items()}
    rollup = RollupDelta(
        key=f"{state.tenant_id}/{state.job_id}#{state.publications + 1}",
        job_id=state.job_id,
        status=status,
        events=events - state.published_events,
        analyses={
            t: types.get(t, 0) - state.published_types.get(t, 0)
            for t in {**types, **state.published_types}
            if types.get(t, 0) != state.published_types.get(t, 0)
        },
        dead_letters=len(state.refusals),
    )
    return Publication(
        snapshot=snapshot,
        refusals=list(state.refusals),
        rollup=rollup,
        changes=state.changes,
    )


def commit(state: JobState, publication: Publication, now: datetime) -> None:
    """Record that ``publication`` is durably written."""
    # Refusals are only ever appended, so the published ones are a prefix.
    del state.refusals[: len(publication.refusals)]
    state.publications += 1
    snapshot = publication.snapshot
    if snapshot is None:
        return
    state.version = snapshot.version
    state.last_status = snapshot.status
    state.last_published_at = now
    state.published_changes = publication.changes
    state.published_events = snapshot.events
    state.published_types = {t: s.filled for t, s in snapshot.slots.items()}


class PartsView(msgspec.Struct, frozen=True, kw_only=True):
    """One analysis type's parts as a job sees them."""

    parts: int | None  # None: not one part seen yet, so the count is unknown
    received: list[int]
    missing: list[int]


class JobView(msgspec.Struct, frozen=True, kw_only=True):
    """What an operator asks of a job: where it stands and what it waits for.

    The answer of the job's ``status`` query (``script.inspect job``).
    """

    tenant_id: str
    job_id: str
    opened: bool
    complete: bool
    version: int  # the last result version written; 0: none yet
    last_status: JobStatus | None
    required: list[str] | None
    # Per required type (or, before job.opened, per type seen).
    parts: dict[str, PartsView]
    events: int  # unique accepted events, job.opened included
    refused: int  # events refused so far (each a dead letter)
    refusals_unwritten: int  # refusals not yet written as dead letters
    first_seen: datetime
    deadline: datetime  # an incomplete job times out then
    last_published_at: datetime | None
    closes_at: datetime | None  # when a job that has published closes
    # Until when late events are taken (a job that reopens does so in a new
    # run, ``generation``); None before the first publication.
    late_until: datetime | None = None
    generation: int = 0


def view(state: JobState, settings: JobSettings) -> JobView:
    """The operator's view of ``state`` (pure; the job's query calls it)."""
    required = None if state.opened is None else list(state.opened.required)
    types = required if required is not None else list(state.slots)
    parts: dict[str, PartsView] = {}
    for analysis_type in types:
        slot = state.slots.get(analysis_type)
        if slot is None:
            parts[analysis_type] = PartsView(parts=None, received=[], missing=[])
            continue
        received = [i for i, event in enumerate(slot.events) if event is not None]
        missing = [i for i, event in enumerate(slot.events) if event is None]
        parts[analysis_type] = PartsView(
            parts=slot.parts, received=received, missing=missing
        )
    return JobView(
        tenant_id=state.tenant_id,
        job_id=state.job_id,
        opened=state.opened is not None,
        complete=is_complete(state),
        version=state.version,
        last_status=state.last_status,
        required=required,
        parts=parts,
        events=event_count(state),
        refused=sum(1 for o in state.outcomes.values() if o == REJECTED),
        refusals_unwritten=len(state.refusals),
        first_seen=state.first_seen,
        deadline=deadline(state, settings),
        last_published_at=state.last_published_at,
        closes_at=closes_at(state, settings),
        late_until=late_until(state, settings),
        generation=state.generation,
    )
