"""A shard proxy's outbox: ingest, take for delivery, requeue after a failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.rules import proxy as proxy_rules
from actors.rules.proxy import (
    IngestAck,
    IngestBatch,
    JobDelivery,
    ProxySettings,
    ProxyState,
    any_due,
    is_complete,
    job_key,
    next_due,
    requeue,
    take,
)
from wire.events import AnalysisResult, Event, JobOpened, event_json
from wire.validate import reject, rejection_id

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = ProxySettings(shard=0, shards=1, max_payload_bytes=1024)


def ingest(
    state: ProxyState,
    batch: IngestBatch,
    settings: ProxySettings,
    *,
    now: datetime = T0,
    follow_ups: bool = False,
    short_deadlines: bool = False,
) -> IngestAck:
    """``proxy_rules.ingest``, at T0 unless a test says when."""
    return proxy_rules.ingest(
        state,
        batch,
        settings,
        now=now,
        follow_ups=follow_ups,
        short_deadlines=short_deadlines,
    )


def result(
    job_id: str, n: int, *, tenant_id: str = "tenant-a", **changes: Any
) -> AnalysisResult:
    fields: dict[str, Any] = {
        "event_id": f"{job_id}:{n}",
        "tenant_id": tenant_id,
        "job_id": job_id,
        "analysis_type": "detect",
        "part": n,
        "parts": 100,
        "payload": b'{"n":%d}' % n,
        "at": T0,
    }
    fields.update(changes)
    return AnalysisResult(**fields)


def opened(job_id: str, *, tenant_id: str = "tenant-a", **changes: Any) -> JobOpened:
    fields: dict[str, Any] = {
        "event_id": f"{job_id}:opened",
        "tenant_id": tenant_id,
        "job_id": job_id,
        "required": ["detect"],
        "at": T0,
    }
    fields.update(changes)
    return JobOpened(**fields)


def ids(events: list[Event]) -> list[str]:
    return [e.event_id for e in events]


def queued(state: ProxyState) -> int:
    return sum(len(events) for events in state.outbox.values())


def loaded(*jobs: tuple[str, int]) -> ProxyState:
    """A proxy holding ``n`` events for each named job, interleaved."""
    state = ProxyState()
    longest = max(n for _, n in jobs)
    events = [result(job, i) for i in range(longest) for job, n in jobs if i < n]
    ingest(state, IngestBatch(events=events), SETTINGS)
    return state


# --- ingest --------------------------------------------------------------------------


def test_ingest_queues_valid_events_per_job_key_in_arrival_order() -> None:
    state = ProxyState()
    events = [
        result("job-1", 0),
        opened("job-2"),
        opened("job-1"),
        result("job-1", 1, tenant_id="tenant-b"),
        result("job-2", 0),
    ]
    ack = ingest(state, IngestBatch(events=events), SETTINGS)
    assert ack == IngestAck(accepted=5)
    assert list(state.outbox) == [
        "tenant-a/job-1",
        "tenant-a/job-2",
        "tenant-b/job-1",
    ]
    assert ids(state.outbox["tenant-a/job-1"]) == ["job-1:0", "job-1:opened"]
    assert ids(state.outbox["tenant-a/job-2"]) == ["job-2:opened", "job-2:0"]
    assert state.pending == 5
    assert state.accepted == 5


def test_job_key_joins_tenant_and_job() -> None:
    assert job_key("tenant-a", "job-1") == "tenant-a/job-1"


def test_ingest_counts_duplicates_within_a_batch_and_across_batches() -> None:
    state = ProxyState()
    first = ingest(
        state, IngestBatch(events=[result("j", 0), result("j", 0)]), SETTINGS
    )
    second = ingest(
        state, IngestBatch(events=[result("j", 0), result("j", 1)]), SETTINGS
    )
    assert first == IngestAck(accepted=1, duplicates=1)
    assert second == IngestAck(accepted=1, duplicates=1)
    assert ids(state.outbox["tenant-a/j"]) == ["j:0", "j:1"]
    assert (state.pending, state.duplicates) == (2, 2)


def test_event_taken_for_delivery_is_still_a_duplicate() -> None:
    state = ProxyState()
    ingest(state, IngestBatch(events=[result("j", 0)]), SETTINGS)
    take(state, 100, set())
    ack = ingest(state, IngestBatch(events=[result("j", 0)]), SETTINGS)
    assert ack == IngestAck(duplicates=1)
    assert state.outbox == {}
    assert state.pending == 0


@pytest.mark.parametrize(
    ("event", "where"),
    [
        pytest.param(result("j", 3, parts=2), "`$.part`", id="part-ge-parts"),
        pytest.param(
            result("j", 0, payload=b'{"x":"' + b"y" * 2000 + b'"}'),
            "`$.payload`",
            id="payload-over-limit",
        ),
        pytest.param(
            opened("j", required=["detect", "detect"]), "`$.required`", id="dup-type"
        ),
    ],
)
def test_ingest_rechecks_semantic_rules_on_structs_built_directly(
    event: Event, where: str
) -> None:
    """The proxy trusts no caller: rules the schema cannot express run again."""
    state = ProxyState()
    ack = ingest(state, IngestBatch(events=[event]), SETTINGS)
    assert ack == IngestAck(rejected=1)
    assert state.outbox == {}
    assert state.pending == 0
    [rejection] = state.rejections
    assert where in rejection.reason
    assert rejection.raw == event_json(event)
    assert rejection.rejection_id == rejection_id(event_json(event))
    assert (rejection.event_id, rejection.tenant_id, rejection.job_id) == (
        event.event_id,
        "tenant-a",
        "j",
    )


def test_rejected_event_does_not_mark_its_id_as_seen() -> None:
    state = ProxyState()
    ingest(state, IngestBatch(events=[result("j", 3, parts=2)]), SETTINGS)
    ack = ingest(state, IngestBatch(events=[result("j", 1, parts=2)]), SETTINGS)
    assert ack == IngestAck(accepted=1)


def test_ingest_carries_edge_rejections() -> None:
    state = ProxyState()
    edge = [reject(b"not json", "not valid JSON"), reject(b"{}", "missing type")]
    ack = ingest(state, IngestBatch(events=[result("j", 0)], rejections=edge), SETTINGS)
    assert ack == IngestAck(accepted=1, rejected=2)
    assert state.rejections == edge
    assert state.rejected == 2


def test_ingest_totals_accumulate_over_batches() -> None:
    state = ProxyState()
    edge = reject(b"x", "bad")
    ingest(state, IngestBatch(events=[result("j", 0)], rejections=[edge]), SETTINGS)
    ingest(
        state, IngestBatch(events=[result("j", 0), result("j", 9, parts=2)]), SETTINGS
    )
    assert (state.accepted, state.duplicates, state.rejected) == (1, 1, 2)


def test_recent_event_ids_are_bounded_and_forget_the_oldest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(proxy_rules, "RECENT_EVENT_IDS", 3)
    state = ProxyState()
    ingest(state, IngestBatch(events=[result("j", n) for n in range(4)]), SETTINGS)
    assert list(state.recent) == ["tenant-a/j/j:1", "tenant-a/j/j:2", "tenant-a/j/j:3"]
    ack = ingest(state, IngestBatch(events=[result("j", 0), result("j", 3)]), SETTINGS)
    assert ack == IngestAck(accepted=1, duplicates=1)


def test_an_event_id_is_a_duplicate_only_within_its_job() -> None:
    # Event ids need only be unique per job: another job's (or another
    # tenant's) event with the same id is a different event.
    state = ProxyState()
    first = result("j", 0, event_id="e1")
    ingest(state, IngestBatch(events=[first]), SETTINGS)
    ack = ingest(
        state,
        IngestBatch(
            events=[
                result("j", 0, event_id="e1", tenant_id="tenant-b"),
                result("k", 0, event_id="e1"),
                first,
            ]
        ),
        SETTINGS,
    )
    assert ack == IngestAck(accepted=2, duplicates=1)
    assert queued(state) == 3


# --- take ----------------------------------------------------------------------------


def test_take_never_includes_a_busy_job() -> None:
    state = loaded(("a", 2), ("b", 2), ("c", 2))
    taken = take(state, 100, {"tenant-a/b"})
    assert [d.job_id for d in taken] == ["a", "c"]
    assert list(state.outbox) == ["tenant-a/b"]
    assert state.pending == 2


def test_take_keeps_each_jobs_events_together_and_in_order() -> None:
    state = loaded(("a", 3), ("b", 4))
    taken = take(state, 100, set())
    assert taken == [
        JobDelivery(
            tenant_id="tenant-a",
            job_id="a",
            events=[result("a", 0), result("a", 1), result("a", 2)],
            queued_at=T0,
        ),
        JobDelivery(
            tenant_id="tenant-a",
            job_id="b",
            events=[result("b", i) for i in range(4)],
            queued_at=T0,
        ),
    ]


def test_a_delivery_carries_when_its_jobs_first_event_reached_the_proxy() -> None:
    state = ProxyState()
    ingest(state, IngestBatch(events=[result("a", 0)]), SETTINGS, now=T0)
    later = T0 + timedelta(seconds=3)
    ingest(state, IngestBatch(events=[result("a", 1)]), SETTINGS, now=later)
    [delivery] = take(state, 100, set())
    assert delivery.queued_at == T0
    # Put back after a failed delivery: due at once, its arrival unknown.
    requeue(state, [delivery], [])
    [again] = take(state, 100, set())
    assert again.queued_at is None


def test_take_serves_jobs_in_the_order_they_first_queued() -> None:
    state = loaded(("c", 1), ("a", 1), ("b", 1))
    assert [d.job_id for d in take(state, 100, set())] == ["c", "a", "b"]


def test_take_respects_the_limit_in_whole_jobs() -> None:
    state = loaded(("a", 3), ("b", 3), ("c", 3), ("d", 3))
    taken = take(state, 4, set())
    # Whole jobs: it stops once the limit is reached, overshooting by less
    # than one job.
    assert [d.job_id for d in taken] == ["a", "b"]
    assert sum(len(d.events) for d in taken) == 6
    assert list(state.outbox) == ["tenant-a/c", "tenant-a/d"]


def test_take_takes_a_job_larger_than_the_limit_whole() -> None:
    state = loaded(("big", 10), ("small", 1))
    [delivery] = take(state, 3, set())
    assert delivery.job_id == "big"
    assert len(delivery.events) == 10


def test_take_from_an_empty_or_all_busy_outbox_takes_nothing() -> None:
    assert take(ProxyState(), 10, set()) == []
    state = loaded(("a", 2))
    assert take(state, 10, {"tenant-a/a"}) == []
    assert state.pending == 2


def test_take_keeps_pending_equal_to_the_queued_events() -> None:
    state = loaded(("a", 3), ("b", 1), ("c", 5))
    assert state.pending == queued(state) == 9
    take(state, 2, set())
    assert state.pending == queued(state) == 6
    take(state, 100, {"tenant-a/c"})
    assert state.pending == queued(state) == 5


# --- requeue -------------------------------------------------------------------------


def test_requeue_puts_events_back_ahead_of_newer_ones() -> None:
    state = loaded(("a", 2))
    taken = take(state, 100, set())
    ingest(state, IngestBatch(events=[result("a", 2), result("a", 3)]), SETTINGS)
    requeue(state, taken, [])
    assert ids(state.outbox["tenant-a/a"]) == ["a:0", "a:1", "a:2", "a:3"]
    assert state.pending == queued(state) == 4


def test_requeue_restores_a_job_with_no_newer_events() -> None:
    state = loaded(("a", 2), ("b", 1))
    taken = take(state, 1, set())
    requeue(state, taken, [])
    assert ids(state.outbox["tenant-a/a"]) == ["a:0", "a:1"]
    assert state.pending == queued(state) == 3


def test_requeue_puts_rejections_back_ahead_of_newer_ones() -> None:
    state = ProxyState()
    old = reject(b"old", "bad")
    new = reject(b"new", "bad")
    ingest(state, IngestBatch(rejections=[new]), SETTINGS)
    requeue(state, [], [old])
    assert state.rejections == [old, new]


# --- property: nothing lost, nothing doubled, order kept ---------------------

JOBS = ["a", "b", "c", "d"]


@st.composite
def operations(draw: Any) -> list[tuple[str, Any]]:
    ops: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["ingest", "take", "fail"]))
        if kind == "ingest":
            ops.append((kind, draw(st.lists(st.sampled_from(JOBS), max_size=6))))
        elif kind == "take":
            ops.append((kind, draw(st.integers(1, 6))))
        else:
            ops.append((kind, draw(st.integers(0, 3))))
    return ops


@settings(max_examples=200, deadline=None)
@given(operations())
def test_outbox_never_loses_doubles_or_reorders_a_jobs_events(
    ops: list[tuple[str, Any]],
) -> None:
    """Random ingests, takes and failed deliveries keep every invariant."""
    state = ProxyState()
    sent: dict[str, list[str]] = {job: [] for job in JOBS}
    in_flight: list[JobDelivery] = []
    delivered: dict[str, list[str]] = {job: [] for job in JOBS}
    counter = 0
    for kind, arg in ops:
        if kind == "ingest":
            events = []
            for job in arg:
                events.append(result(job, counter, part=0))
                sent[job].append(f"{job}:{counter}")
                counter += 1
            ingest(state, IngestBatch(events=events), SETTINGS)
        elif kind == "take":
            busy = {job_key(d.tenant_id, d.job_id) for d in in_flight}
            taken = take(state, arg, busy)
            assert not busy & {job_key(d.tenant_id, d.job_id) for d in taken}
            in_flight.extend(taken)
        elif in_flight:
            # Delivery arg (mod the in-flight count) fails; the rest succeed.
            failed = in_flight.pop(arg % len(in_flight))
            requeue(state, [failed], [])
            for delivery in in_flight:
                delivered[delivery.job_id].extend(ids(delivery.events))
            in_flight = []
        assert state.pending == queued(state)
        # What a continue-as-new would carry is kept exact, incrementally.
        assert state.held_bytes == sum(
            proxy_rules.event_bytes(e)
            for events in state.outbox.values()
            for e in events
        )
    for delivery in in_flight:
        delivered[delivery.job_id].extend(ids(delivery.events))
    for job in JOBS:
        remaining = ids(state.outbox.get(job_key("tenant-a", job), []))
        assert delivered[job] + remaining == sent[job]


# --- byte budget -----------------------------------------------------------------


def big(job_id: str, n: int, size: int) -> AnalysisResult:
    return result(job_id, n, payload=b'{"blob":"%s"}' % (b"x" * size))


def test_take_stops_before_the_byte_budget_in_whole_jobs() -> None:
    state = ProxyState()
    events = [big("a", 0, 600), big("b", 0, 600), big("c", 0, 100)]
    ingest(state, IngestBatch(events=events), ProxySettings(shard=0, shards=1))
    taken = take(state, limit=100, busy=set(), max_bytes=1000)
    assert [d.job_id for d in taken] == ["a"]
    assert list(state.outbox) == [job_key("tenant-a", "b"), job_key("tenant-a", "c")]
    assert state.pending == 2


def test_take_splits_only_a_job_that_alone_exceeds_the_byte_budget() -> None:
    state = ProxyState()
    events = [big("a", n, 600) for n in range(5)]
    ingest(state, IngestBatch(events=events), ProxySettings(shard=0, shards=1))
    first = take(state, limit=100, busy=set(), max_bytes=1500)
    assert [ids(d.events) for d in first] == [["a:0", "a:1"]]
    assert ids(state.outbox[job_key("tenant-a", "a")]) == ["a:2", "a:3", "a:4"]
    rest = take(state, limit=100, busy=set(), max_bytes=1500)
    assert [ids(d.events) for d in rest] == [["a:2", "a:3"]]
    assert state.pending == 1


def test_take_always_takes_one_event_even_over_the_byte_budget() -> None:
    state = ProxyState()
    ingest(
        state, IngestBatch(events=[big("a", 0, 5000)]), ProxySettings(shard=0, shards=1)
    )
    (delivery,) = take(state, limit=100, busy=set(), max_bytes=1000)
    assert ids(delivery.events) == ["a:0"]
    assert state.outbox == {}
    assert state.pending == 0


# --- holding each job until it is complete or due ----------------------------

T1 = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
T2 = datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)


def two_parts(job_id: str, n: int) -> AnalysisResult:
    return result(job_id, n, parts=2)


def test_a_job_is_complete_with_its_opened_event_and_every_part() -> None:
    assert is_complete([opened("j"), two_parts("j", 1), two_parts("j", 0)])
    assert not is_complete([opened("j"), two_parts("j", 0)])
    assert not is_complete([two_parts("j", 0), two_parts("j", 1)])  # no opened
    assert not is_complete(
        [opened("j", required=["detect", "ocr"]), two_parts("j", 0), two_parts("j", 1)]
    )


def test_take_with_due_takes_complete_and_old_jobs_and_leaves_young_partial_ones():
    state = ProxyState()
    ingest(state, IngestBatch(events=[two_parts("old", 0)]), SETTINGS, now=T0)
    ingest(
        state,
        IngestBatch(
            events=[two_parts("young", 0), opened("done"), two_parts("done", 0)]
        ),
        SETTINGS,
        now=T2,
    )
    ingest(state, IngestBatch(events=[two_parts("done", 1)]), SETTINGS, now=T2)
    assert list(state.complete) == ["tenant-a/done"]
    assert any_due(state, set(), due=T1)
    assert next_due(state, set()) == T0

    taken = take(state, 100, set(), due=T1)

    assert [d.job_id for d in taken] == ["done", "old"]  # complete ones first
    assert list(state.outbox) == ["tenant-a/young"]
    assert state.queued_at == {"tenant-a/young": T2}
    assert state.complete == {}
    assert not any_due(state, set(), due=T1)
    assert next_due(state, set()) == T2
    assert take(state, 100, set(), due=T1) == []
    # Without due, everything is taken (a draining proxy).
    assert [d.job_id for d in take(state, 100, set())] == ["young"]
    assert state.pending == 0


def test_busy_jobs_are_neither_due_nor_the_next_to_come_due() -> None:
    state = ProxyState()
    ingest(state, IngestBatch(events=[two_parts("a", 0)]), SETTINGS, now=T0)
    ingest(state, IngestBatch(events=[two_parts("b", 0)]), SETTINGS, now=T1)
    busy = {"tenant-a/a"}
    assert next_due(state, busy) == T1
    assert not any_due(state, busy, due=T0)
    assert [d.job_id for d in take(state, 100, busy, due=T1)] == ["b"]


def test_events_put_back_after_a_failed_delivery_are_due_at_once() -> None:
    state = ProxyState()
    ingest(state, IngestBatch(events=[two_parts("j", 0)]), SETTINGS, now=T0)
    deliveries = take(state, 100, set(), due=T0)
    ingest(state, IngestBatch(events=[two_parts("j", 1)]), SETTINGS, now=T2)
    requeue(state, deliveries, [])
    assert state.queued_at == {}
    assert any_due(state, set(), due=T0)
    assert ids(take(state, 100, set(), due=T0)[0].events) == ["j:0", "j:1"]


def test_a_delivered_jobs_later_events_are_due_at_once_with_follow_ups() -> None:
    """A job whose hold ran out (or that a draining proxy sent early) is
    partly with its job already: its later events go at once instead of
    waiting out another hold for a whole job the proxy can no longer see."""
    for follow_ups in (False, True):
        state = ProxyState()
        ingest(
            state,
            IngestBatch(events=[opened("j"), two_parts("j", 0)]),
            SETTINGS,
            now=T0,
        )
        (first,) = take(state, 100, set(), due=T0, remember=follow_ups)
        assert ids(first.events) == ["j:opened", "j:0"]
        assert ("tenant-a/j" in state.delivered) == follow_ups
        ingest(
            state,
            IngestBatch(events=[two_parts("j", 1)]),
            SETTINGS,
            now=T2,
            follow_ups=follow_ups,
        )
        # Held until T2 + hold without follow-ups; due at once with them.
        assert any_due(state, set(), due=T1) == follow_ups
        taken = take(state, 100, set(), due=T1, remember=follow_ups)
        assert [ids(d.events) for d in taken] == ([["j:1"]] if follow_ups else [])


def test_the_proxy_remembers_only_its_latest_deliveries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(proxy_rules, "DELIVERED_JOBS", 3)
    state = ProxyState()
    for n, job in enumerate(("a", "b", "c", "a", "d")):
        ingest(state, IngestBatch(events=[result(job, n)]), SETTINGS, now=T0)
        take(state, 100, set(), remember=True)
    # "a" was delivered again after "b", so "b" is the oldest forgotten.
    assert list(state.delivered) == ["tenant-a/c", "tenant-a/a", "tenant-a/d"]


# --- One workflow task's bytes -------------------------------------------------


def test_a_task_accepts_its_first_batch_however_large_then_keeps_to_its_share() -> None:
    budget = proxy_rules.TaskBudget().at(3)
    huge = proxy_rules.TASK_BYTES * 2
    assert budget.admits(huge)
    budget.ingested += 10
    assert budget.admits(proxy_rules.TASK_INGEST_BYTES - 10)
    assert not budget.admits(proxy_rules.TASK_INGEST_BYTES - 9)


def test_a_task_starts_deliveries_within_its_room_and_a_new_task_starts_afresh() -> (
    None
):
    budget = proxy_rules.TaskBudget().at(3)
    budget.ingested = proxy_rules.TASK_BYTES  # batches took everything
    # The first delivery of a task always goes, with at least the floor.
    assert budget.delivery_room() == proxy_rules.MIN_DELIVERY_ROOM
    budget.delivered += proxy_rules.MIN_DELIVERY_ROOM
    assert budget.delivery_room() is None
    assert not budget.admits(1)
    # The next task (a longer history) has its whole budget again.
    budget.at(9)
    assert (budget.ingested, budget.delivered) == (0, 0)
    assert budget.delivery_room() == proxy_rules.TASK_BYTES
    budget.delivered = proxy_rules.TASK_BYTES - proxy_rules.MIN_DELIVERY_ROOM
    assert budget.delivery_room() == proxy_rules.MIN_DELIVERY_ROOM
    # The same task asked again keeps what it spent.
    assert (
        budget.at(9).delivered == proxy_rules.TASK_BYTES - proxy_rules.MIN_DELIVERY_ROOM
    )


@given(
    payloads=st.lists(st.integers(min_value=0, max_value=4096), max_size=20),
    raws=st.lists(st.integers(min_value=0, max_value=4096), max_size=5),
)
def test_a_batch_costs_at_least_its_payloads_and_raw_inputs(
    payloads: list[int], raws: list[int]
) -> None:
    events: list[Event] = [
        result("j", n, parts=len(payloads), payload=b"x" * size)
        for n, size in enumerate(payloads)
    ]
    rejections = [reject(b"y" * size, "bad") for size in raws]
    batch = IngestBatch(events=events, rejections=rejections)
    cost = proxy_rules.batch_bytes(batch)
    assert cost >= sum(payloads) + sum(raws)
    assert cost == proxy_rules.deliveries_bytes(
        [JobDelivery(tenant_id="tenant-a", job_id="j", events=events)], rejections
    )


def test_a_proxy_over_its_carry_budget_says_so_until_it_delivers() -> None:
    big = b"x" * (120 << 10)
    events = [result(f"j{n}", 0, payload=big) for n in range(10)]
    state = ProxyState()
    ingest(state, IngestBatch(events=events), ProxySettings(shard=0, shards=1))
    assert state.held_bytes > proxy_rules.CARRY_BYTES
    assert proxy_rules.over_carry(state)
    # Oldest first (no due time): two jobs out, the rest fit.
    taken = take(state, 2, set())
    assert [d.job_id for d in taken] == ["j0", "j1"]
    assert not proxy_rules.over_carry(state)
    requeue(state, taken, [])
    assert proxy_rules.over_carry(state)


# Due are jobs queued at or before this: T0's jobs are still held.
HOLDING = T0 - timedelta(seconds=1)


def test_a_job_whose_deadline_is_within_the_hold_goes_at_once() -> None:
    holding = ProxySettings(shard=0, shards=1, hold_s=30.0)
    for deadline_s, due in ((5.0, True), (30.0, True), (31.0, False), (None, False)):
        for short_deadlines in (False, True):
            state = ProxyState()
            ingest(
                state,
                IngestBatch(events=[opened("j", deadline_s=deadline_s)]),
                holding,
                short_deadlines=short_deadlines,
            )
            # Not complete (no part yet): only a short deadline makes it due.
            assert any_due(state, set(), due=HOLDING) == (due and short_deadlines)


def test_a_short_deadline_arriving_after_the_parts_makes_the_job_due() -> None:
    holding = ProxySettings(shard=0, shards=1, hold_s=30.0)
    state = ProxyState()
    ingest(state, IngestBatch(events=[result("j", 0)]), holding, short_deadlines=True)
    assert not any_due(state, set(), due=HOLDING)
    ingest(
        state,
        IngestBatch(events=[opened("j", deadline_s=2.0)]),
        holding,
        short_deadlines=True,
    )
    assert any_due(state, set(), due=HOLDING)


def test_reassess_judges_held_jobs_as_ingest_would_now() -> None:
    holding = ProxySettings(shard=0, shards=1, hold_s=30.0)
    state = ProxyState()
    # Taken in before the proxy knew its patches: nothing marked due.
    ingest(state, IngestBatch(events=[opened("short", deadline_s=1.0)]), holding)
    ingest(state, IngestBatch(events=[result("later", 1)]), holding)
    ingest(state, IngestBatch(events=[opened("long", deadline_s=99.0)]), holding)
    state.delivered["tenant-a/later"] = None
    assert not any_due(state, set(), due=HOLDING)
    proxy_rules.reassess(state, holding, follow_ups=True, short_deadlines=True)
    assert list(state.complete) == ["tenant-a/short", "tenant-a/later"]
