"""A job's pure rules: join, completeness, de-duplication, deadlines, versions."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.rules.job import (
    ACCEPTED,
    REJECTED,
    BatchAck,
    JobSettings,
    JobState,
    Publication,
    RollupDelta,
    apply_batch,
    apply_event,
    closes_at,
    commit,
    deadline,
    decide,
    event_count,
    has_work,
    is_complete,
    new_job,
    next_wakeup,
    note_first_arrival,
    receive,
    started,
)
from wire.events import AnalysisResult, Event, JobOpened

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TENANT, JOB = "tenant-a", "job-1"
SETTINGS = JobSettings(default_deadline_s=600.0, linger_s=300.0)
TYPES = {"detect": 2, "caption": 1, "ocr": 3}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def opened(
    *required: str,
    event_id: str = "opened",
    deadline_s: float | None = None,
    tenant_id: str = TENANT,
    job_id: str = JOB,
) -> JobOpened:
    return JobOpened(
        event_id=event_id,
        tenant_id=tenant_id,
        job_id=job_id,
        required=list(required),
        at=T0,
        deadline_s=deadline_s,
    )


def result(
    analysis_type: str,
    part: int,
    parts: int,
    *,
    event_id: str | None = None,
    tenant_id: str = TENANT,
    job_id: str = JOB,
) -> AnalysisResult:
    return AnalysisResult(
        event_id=event_id or f"{analysis_type}-{part}",
        tenant_id=tenant_id,
        job_id=job_id,
        analysis_type=analysis_type,
        part=part,
        parts=parts,
        payload=b'{"type":"%s","part":%d}' % (analysis_type.encode(), part),
        at=T0,
    )


def results(types: dict[str, int]) -> list[AnalysisResult]:
    return [
        result(analysis_type, part, parts)
        for analysis_type, parts in types.items()
        for part in range(parts)
    ]


def job_events(types: dict[str, int] = TYPES) -> list[Event]:
    return [opened(*types), *results(types)]


def fresh() -> JobState:
    return new_job(TENANT, JOB, T0)


def frozen(state: JobState) -> bytes:
    """The whole state as bytes, to assert that nothing changed."""
    return msgspec.msgpack.encode(state)


def publish(state: JobState, now: datetime) -> Publication | None:
    """Decide and, if there is anything, commit it as a worker would."""
    publication = decide(state, now, SETTINGS)
    if publication is not None:
        commit(state, publication, now)
    return publication


# --- completeness ----------------------------------------------------------------


def test_job_is_complete_after_all_parts_of_all_required_types() -> None:
    state = fresh()
    events = job_events()
    for event in events[:-1]:
        assert apply_event(state, event) == ACCEPTED
        assert not is_complete(state)
    assert apply_event(state, events[-1]) == ACCEPTED
    assert is_complete(state)
    assert event_count(state) == 1 + sum(TYPES.values())


@pytest.mark.parametrize("seed", range(6))
def test_completeness_does_not_depend_on_delivery_order(seed: int) -> None:
    events = job_events()
    random.Random(seed).shuffle(events)
    state = fresh()
    assert apply_batch(state, events) == BatchAck(accepted=len(events))
    assert is_complete(state)


def test_results_before_job_opened_are_held_and_count_once_it_arrives() -> None:
    state = fresh()
    assert apply_batch(state, results(TYPES)).accepted == sum(TYPES.values())
    assert not is_complete(state)
    assert apply_event(state, opened(*TYPES)) == ACCEPTED
    assert is_complete(state)
    assert state.refusals == []


def test_job_without_job_opened_is_never_complete() -> None:
    state = fresh()
    apply_batch(state, results(TYPES))
    assert not is_complete(state)
    assert not has_work(state)


def test_missing_required_type_keeps_job_incomplete() -> None:
    state = fresh()
    apply_batch(state, [opened("detect", "caption"), *results({"detect": 2})])
    assert not is_complete(state)


# --- duplicates ------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(job_events())))
def test_redelivered_event_is_a_duplicate_that_changes_nothing(index: int) -> None:
    state = fresh()
    events = job_events()
    apply_batch(state, events)
    before = frozen(state)
    assert apply_event(state, events[index]) is None
    assert frozen(state) == before


def test_same_event_id_with_different_content_is_a_duplicate() -> None:
    state = fresh()
    apply_event(state, result("detect", 0, 2, event_id="e1"))
    before = frozen(state)
    assert apply_event(state, result("detect", 1, 2, event_id="e1")) is None
    assert frozen(state) == before


def test_redelivered_refused_event_is_refused_once_never_twice() -> None:
    state = fresh()
    apply_event(state, opened("detect"))
    stray = result("ocr", 0, 1)
    assert apply_event(state, stray) == REJECTED
    before = frozen(state)
    assert apply_event(state, stray) is None
    assert frozen(state) == before
    assert len(state.refusals) == 1


def test_refused_event_redelivered_after_its_dead_letter_was_published() -> None:
    state = fresh()
    apply_event(state, opened("detect"))
    stray = result("ocr", 0, 1)
    apply_event(state, stray)
    publish(state, at(1))
    assert state.refusals == []
    assert apply_event(state, stray) is None
    assert state.refusals == []
    assert decide(state, at(2), SETTINGS) is None


def test_batch_ack_counts_accepted_duplicates_and_rejected() -> None:
    state = fresh()
    events = job_events({"detect": 2})
    batch = [*events, events[1], result("ocr", 0, 1), events[0]]
    assert apply_batch(state, batch) == BatchAck(accepted=3, duplicates=2, rejected=1)


# --- refusals --------------------------------------------------------------------


def test_second_event_for_a_filled_slot_is_a_conflict_naming_the_holder() -> None:
    state = fresh()
    apply_event(state, result("detect", 0, 2, event_id="first"))
    assert apply_event(state, result("detect", 0, 2, event_id="second")) == REJECTED
    [refusal] = state.refusals
    assert refusal.event.event_id == "second"
    assert "conflict" in refusal.reason
    assert "first" in refusal.reason
    held = state.slots["detect"].events[0]
    assert held is not None
    assert held.event_id == "first"
    assert state.slots["detect"].filled == 1


def test_parts_disagreeing_with_earlier_parts_of_the_type_is_refused() -> None:
    state = fresh()
    apply_event(state, result("detect", 0, 2))
    assert apply_event(state, result("detect", 1, 3)) == REJECTED
    [refusal] = state.refusals
    assert "`$.parts`" in refusal.reason
    assert "parts=3" in refusal.reason
    assert "parts=2" in refusal.reason
    assert state.slots["detect"].parts == 2
    assert state.slots["detect"].filled == 1


def test_type_outside_required_is_refused_after_job_opened() -> None:
    state = fresh()
    apply_event(state, opened("detect"))
    assert apply_event(state, result("ocr", 0, 1)) == REJECTED
    assert "ocr" not in state.slots
    [refusal] = state.refusals
    assert "'ocr'" in refusal.reason
    assert "`$.analysis_type`" in refusal.reason


def test_type_held_before_job_opened_is_refused_at_open_and_removed() -> None:
    state = fresh()
    held = [result("ocr", 0, 2), result("ocr", 1, 2), result("detect", 0, 1)]
    assert apply_batch(state, held).accepted == 3
    assert apply_event(state, opened("detect")) == ACCEPTED
    assert "ocr" not in state.slots
    assert [r.event.event_id for r in state.refusals] == ["ocr-0", "ocr-1"]
    assert all("not required" in r.reason for r in state.refusals)
    assert state.outcomes["ocr-0"] == REJECTED
    assert is_complete(state)
    assert event_count(state) == 2
    # Refused at open: a redelivery is a duplicate, not a second dead letter.
    assert apply_event(state, held[0]) is None
    assert len(state.refusals) == 2


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(result("detect", 0, 2, tenant_id="tenant-b"), id="result-tenant"),
        pytest.param(result("detect", 0, 2, job_id="job-2"), id="result-job"),
        pytest.param(opened("detect", tenant_id="tenant-b"), id="opened-tenant"),
        pytest.param(opened("detect", job_id="job-2"), id="opened-job"),
    ],
)
def test_event_for_another_tenant_or_job_is_refused(event: Event) -> None:
    state = fresh()
    assert apply_event(state, event) == REJECTED
    assert state.opened is None
    assert state.slots == {}
    assert state.changes == 0
    [refusal] = state.refusals
    assert f"{event.tenant_id}/{event.job_id}" in refusal.reason


def test_second_job_opened_is_refused() -> None:
    state = fresh()
    apply_event(state, opened("detect"))
    assert apply_event(state, opened("ocr", event_id="opened-again")) == REJECTED
    assert state.opened is not None
    assert state.opened.required == ["detect"]
    assert "already opened" in state.refusals[0].reason


# --- decide and commit ------------------------------------------------------------


def test_decide_gives_version_1_complete_once_complete() -> None:
    state = fresh()
    apply_batch(state, job_events())
    assert has_work(state)
    publication = decide(state, at(5), SETTINGS)
    assert publication is not None
    snapshot = publication.snapshot
    assert snapshot is not None
    assert (snapshot.version, snapshot.status) == (1, "complete")
    assert snapshot.events == 1 + sum(TYPES.values())
    assert snapshot.completed_at == at(5)
    assert snapshot.missing() == {}
    assert publication.rollup.status == "complete"
    assert publication.refusals == []


def test_decide_is_repeatable_until_commit() -> None:
    """A retried publication carries the same key and content."""
    state = fresh()
    apply_batch(state, job_events())
    assert decide(state, at(5), SETTINGS) == decide(state, at(5), SETTINGS)


def test_decide_gives_nothing_before_the_deadline_when_incomplete() -> None:
    state = fresh()
    apply_batch(state, job_events()[:-1])
    assert not has_work(state)
    assert decide(state, at(0), SETTINGS) is None
    assert decide(state, at(599.999), SETTINGS) is None


@pytest.mark.parametrize("seconds", [600, 601, 86_400])
def test_decide_times_out_at_or_after_the_default_deadline(seconds: float) -> None:
    state = fresh()
    apply_batch(state, job_events()[:-1])
    assert deadline(state, SETTINGS) == at(600)
    assert next_wakeup(state, SETTINGS) == at(600)
    publication = decide(state, at(seconds), SETTINGS)
    assert publication is not None
    assert publication.snapshot is not None
    assert (publication.snapshot.version, publication.snapshot.status) == (
        1,
        "timed_out",
    )


def test_per_job_deadline_s_overrides_the_default() -> None:
    state = fresh()
    apply_event(state, opened(*TYPES, deadline_s=30))
    assert deadline(state, SETTINGS) == at(30)
    assert decide(state, at(29.999), SETTINGS) is None
    publication = decide(state, at(30), SETTINGS)
    assert publication is not None
    assert publication.snapshot is not None
    assert publication.snapshot.status == "timed_out"


def test_deadline_counts_from_the_jobs_first_event() -> None:
    state = new_job(TENANT, JOB, at(100))
    apply_event(state, opened("detect", deadline_s=10))
    assert deadline(state, SETTINGS) == at(110)


def test_first_batch_moves_the_deadline_to_its_first_events_arrival() -> None:
    # Job started at 30 s; its events reached the proxy at 10 s and were held.
    state = new_job(TENANT, JOB, at(30))
    note_first_arrival(state, at(10))
    apply_batch(state, [opened("detect", deadline_s=60), result("detect", 0, 2)])
    assert state.first_seen == at(10)
    assert deadline(state, SETTINGS) == at(70)
    assert decide(state, at(69), SETTINGS) is None
    publication = decide(state, at(70), SETTINGS)
    assert publication is not None
    assert publication.snapshot is not None
    assert publication.snapshot.status == "timed_out"


def test_only_the_first_batch_moves_first_seen() -> None:
    state = new_job(TENANT, JOB, at(30))
    apply_batch(state, [opened("detect")])
    note_first_arrival(state, at(10))  # a later batch: the job holds events
    assert state.first_seen == at(30)


def test_a_refused_first_event_counts_as_the_jobs_first() -> None:
    state = new_job(TENANT, JOB, at(30))
    apply_batch(state, [result("detect", 0, 2, tenant_id="other")])
    note_first_arrival(state, at(10))
    assert state.first_seen == at(30)


@pytest.mark.parametrize("queued_at", [None, 30, 45])
def test_first_seen_never_moves_later_or_without_a_time(
    queued_at: float | None,
) -> None:
    state = new_job(TENANT, JOB, at(30))
    note_first_arrival(state, None if queued_at is None else at(queued_at))
    assert state.first_seen == at(30)


def test_job_with_no_events_but_a_state_times_out_empty() -> None:
    state = fresh()
    publication = decide(state, at(600), SETTINGS)
    assert publication is not None
    assert publication.snapshot is not None
    assert publication.snapshot.events == 0
    assert publication.snapshot.required is None


def test_accepted_late_event_after_commit_gives_version_2_amended() -> None:
    state = fresh()
    events = job_events()
    late = events[-1]
    apply_batch(state, events[:-1])
    first = publish(state, at(600))
    assert first is not None
    assert first.snapshot is not None
    assert first.snapshot.status == "timed_out"
    assert closes_at(state, SETTINGS) == at(900)
    assert next_wakeup(state, SETTINGS) == at(900)
    assert not has_work(state)
    assert decide(state, at(601), SETTINGS) is None

    assert apply_event(state, late) == ACCEPTED
    assert has_work(state)
    second = publish(state, at(700))
    assert second is not None
    snapshot = second.snapshot
    assert snapshot is not None
    assert (snapshot.version, snapshot.status) == (2, "amended")
    assert isinstance(late, AnalysisResult)
    assert snapshot.slots[late.analysis_type].events[late.part] == late
    assert snapshot.events == 1 + sum(TYPES.values())
    assert snapshot.missing() == {}
    assert closes_at(state, SETTINGS) == at(1000)
    assert decide(state, at(701), SETTINGS) is None


def test_published_snapshot_does_not_change_with_later_events() -> None:
    state = fresh()
    apply_batch(state, job_events()[:-1])
    publication = decide(state, at(600), SETTINGS)
    assert publication is not None
    assert publication.snapshot is not None
    before = msgspec.msgpack.encode(publication)
    apply_event(state, job_events()[-1])
    assert msgspec.msgpack.encode(publication) == before


def test_refusal_after_complete_publishes_a_dead_letter_without_a_new_version() -> None:
    state = fresh()
    apply_batch(state, job_events())
    publish(state, at(1))
    assert apply_event(state, result("detect", 0, 2, event_id="dup-part")) == REJECTED
    publication = decide(state, at(2), SETTINGS)
    assert publication is not None
    assert publication.snapshot is None
    assert [r.event.event_id for r in publication.refusals] == ["dup-part"]
    assert publication.rollup.status is None
    assert publication.rollup.events == 0
    assert publication.rollup.dead_letters == 1
    commit(state, publication, at(2))
    assert state.version == 1
    assert decide(state, at(3), SETTINGS) is None


def test_refusals_before_the_deadline_publish_without_a_result_version() -> None:
    state = fresh()
    apply_event(state, opened("detect"))
    apply_event(state, result("ocr", 0, 1))
    assert has_work(state)
    publication = publish(state, at(1))
    assert publication is not None
    assert publication.snapshot is None
    assert state.version == 0
    assert not has_work(state)


def test_commit_clears_only_the_refusals_that_were_published() -> None:
    state = fresh()
    apply_event(state, opened("detect"))
    apply_event(state, result("ocr", 0, 1, event_id="published"))
    publication = decide(state, at(1), SETTINGS)
    assert publication is not None
    apply_event(state, result("ocr", 0, 1, event_id="arrived-meanwhile"))
    commit(state, publication, at(1))
    assert [r.event.event_id for r in state.refusals] == ["arrived-meanwhile"]
    assert has_work(state)


def test_commit_of_v1_keeps_changes_made_after_decide_for_an_amendment() -> None:
    state = fresh()
    apply_batch(state, job_events()[:-1])
    publication = decide(state, at(600), SETTINGS)
    assert publication is not None
    apply_event(state, job_events()[-1])
    commit(state, publication, at(600))
    assert has_work(state)
    amended = decide(state, at(601), SETTINGS)
    assert amended is not None
    assert amended.snapshot is not None
    assert amended.snapshot.status == "amended"


# --- rollup deltas ----------------------------------------------------------------


def rollups_add_up(state: JobState, deltas: list[RollupDelta]) -> None:
    assert len({d.key for d in deltas}) == len(deltas), "keys must be unique"
    assert sum(d.events for d in deltas) == event_count(state)
    per_type: Counter[str] = Counter()
    for delta in deltas:
        per_type.update(delta.analyses)
    assert +per_type == {t: s.filled for t, s in state.slots.items() if s.filled}
    assert all(n != 0 for d in deltas for n in d.analyses.values())


def test_rollup_deltas_of_v1_and_amendments_add_up_to_the_final_counts() -> None:
    state = fresh()
    events = job_events()
    deltas: list[RollupDelta] = []
    refused = 0
    apply_batch(state, [*events[:3], result("zzz", 0, 1)])
    refused += 1
    for now, batch in [
        (at(600), []),  # times out with what it has
        (at(610), events[3:5]),
        (at(620), [result("detect", 0, 2, event_id="conflict")]),
        (at(630), events[5:]),
    ]:
        refused += apply_batch(state, batch).rejected
        publication = publish(state, now)
        assert publication is not None
        deltas.append(publication.rollup)
    assert [d.status for d in deltas] == ["timed_out", "amended", None, "amended"]
    rollups_add_up(state, deltas)
    assert sum(d.dead_letters for d in deltas) == refused == 2
    assert sum(d.status == "amended" for d in deltas) == 2


def test_rollup_deltas_add_up_when_held_parts_are_refused_after_a_timeout() -> None:
    """Parts counted in a timed-out v1 and refused at open come off again."""
    state = fresh()
    deltas: list[RollupDelta] = []
    apply_batch(state, results({"ocr": 2, "detect": 1}))
    for now, batch in [(at(600), []), (at(700), [opened("detect")])]:
        apply_batch(state, batch)
        publication = publish(state, now)
        assert publication is not None
        deltas.append(publication.rollup)
    assert deltas[1].analyses == {"ocr": -2}
    rollups_add_up(state, deltas)
    assert sum(d.dead_letters for d in deltas) == 2


def test_rollup_key_names_tenant_job_and_publication() -> None:
    state = fresh()
    apply_batch(state, job_events())
    publication = publish(state, at(1))
    assert publication is not None
    assert publication.rollup.key == f"{TENANT}/{JOB}#1"
    assert publication.rollup.job_id == JOB


# --- missing parts ----------------------------------------------------------------


def test_missing_lists_missing_parts_of_a_timed_out_job() -> None:
    state = fresh()
    apply_batch(
        state,
        [
            opened("detect", "caption", "ocr"),
            result("detect", 0, 2),
            result("detect", 1, 2),
            result("ocr", 1, 4),
        ],
    )
    publication = decide(state, at(600), SETTINGS)
    assert publication is not None
    assert publication.snapshot is not None
    assert publication.snapshot.missing() == {"caption": [], "ocr": [0, 2, 3]}


def test_missing_without_job_opened_covers_the_types_seen() -> None:
    state = fresh()
    apply_event(state, result("ocr", 2, 3))
    publication = decide(state, at(600), SETTINGS)
    assert publication is not None
    assert publication.snapshot is not None
    assert publication.snapshot.missing() == {"ocr": [0, 1]}


# --- continue-as-new ---------------------------------------------------------------


def test_job_state_survives_a_msgpack_round_trip_and_behaves_identically() -> None:
    state = new_job(TENANT, JOB, T0)
    events = job_events()
    apply_batch(state, [events[3], result("zzz", 0, 1), events[0], events[1]])
    publish(state, at(600))  # a timed-out v1, so the copy carries history
    apply_event(state, result("detect", 0, 2, event_id="conflict"))

    copy = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=JobState)
    assert copy == state
    assert copy.first_seen.tzinfo is not None

    rest = [*events[1:], events[2], result("ocr", 0, 9, event_id="x")]
    assert apply_batch(copy, rest) == apply_batch(state, rest)
    assert frozen(copy) == frozen(state)
    assert decide(state, at(650), SETTINGS) == decide(copy, at(650), SETTINGS)
    publish(state, at(650))
    publish(copy, at(650))
    assert frozen(copy) == frozen(state)
    assert next_wakeup(copy, SETTINGS) == next_wakeup(state, SETTINGS)


# --- property ---------------------------------------------------------------------


@st.composite
def deliveries(draw: Any) -> tuple[dict[str, int], list[Event], int]:
    """A random job, its events in a random order, with random redeliveries."""
    parts = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    types = {f"type-{i}": n for i, n in enumerate(parts)}
    stream: list[Event] = list(draw(st.permutations(job_events(types))))
    redelivered = draw(st.lists(st.sampled_from(stream), max_size=8))
    for event in redelivered:
        stream.insert(draw(st.integers(0, len(stream))), event)
    return types, stream, len(redelivered)


@settings(max_examples=150, deadline=None)
@given(deliveries())
def test_any_delivery_order_yields_exactly_one_complete_publication(
    case: tuple[dict[str, int], list[Event], int],
) -> None:
    types, stream, redeliveries = case
    state = fresh()
    ack = apply_batch(state, stream)
    total_parts = sum(types.values())
    assert ack == BatchAck(accepted=1 + total_parts, duplicates=redeliveries)
    assert is_complete(state)
    assert event_count(state) == 1 + total_parts
    publication = publish(state, at(1))
    assert publication is not None
    assert publication.snapshot is not None
    assert (publication.snapshot.version, publication.snapshot.status) == (
        1,
        "complete",
    )
    assert publication.refusals == []
    assert decide(state, at(2), SETTINGS) is None
    assert decide(state, at(10**6), SETTINGS) is None


def test_parts_past_the_job_byte_cap_are_refused_and_the_rest_kept() -> None:
    state = fresh()
    apply_event(state, opened("detect"))
    parts = [result("detect", n, 3) for n in range(3)]
    size = len(parts[0].payload)
    ack = apply_batch(state, parts, max_job_bytes=2 * size)
    assert ack == BatchAck(accepted=2, rejected=1)
    (refusal,) = state.refusals
    assert refusal.event.event_id == "detect-2"
    assert f"more than {2 * size} bytes" in refusal.reason
    assert state.payload_bytes == 2 * size


def test_held_parts_refused_at_open_give_their_bytes_back() -> None:
    state = fresh()
    apply_batch(state, [result("ocr", 0, 1), result("detect", 0, 1)])
    apply_event(state, opened("detect"))
    assert state.payload_bytes == len(result("detect", 0, 1).payload)


def test_an_eager_start_makes_the_state_a_first_delivery_makes() -> None:
    # The delivery that starts a job computes its reply with ``started``; the
    # job's first task does too, from its input: both must equal what an
    # update delivering the same batch to a new job makes.
    events = [opened("detect"), result("detect", 0, 2), result("detect", 1, 2)]
    kwargs: dict[str, Any] = dict(
        delivery_id="d/1", first_queued_at=at(2), settings=SETTINGS
    )
    eager = started(TENANT, JOB, list(events), at=at(5), **kwargs)
    updated = new_job(TENANT, JOB, at(5))
    reply = receive(updated, list(events), now=at(5), **kwargs)
    assert eager == updated
    assert eager.last_delivery == reply
    assert reply.ack == BatchAck(accepted=3)
    assert reply.publication is not None
    assert reply.publication.snapshot is not None
    assert reply.publication.snapshot.status == "complete"
    assert eager.first_seen == at(2)
    assert eager.version == 1  # committed: the job will not publish it again
    # Through the wire and back (the job's input): the same state again.
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(events), type=list[Event])
    assert started(TENANT, JOB, wire, at=at(5), **kwargs) == eager


def test_a_delivery_while_publishing_hands_back_no_publication() -> None:
    state = new_job(TENANT, JOB, at(0))
    reply = receive(
        state,
        [opened("detect"), result("detect", 0, 1)],
        delivery_id="d/1",
        first_queued_at=None,
        now=at(1),
        settings=SETTINGS,
        publishing=True,
    )
    assert reply.publication is None
    assert reply.ack == BatchAck(accepted=2)
    assert state.version == 0
    assert decide(state, at(1), SETTINGS) is not None  # still to publish
