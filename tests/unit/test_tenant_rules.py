"""A tenant's rollup: de-duplicated deltas counted into aligned windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.rules import tenant as tenant_rules
from actors.rules.job import RollupDelta
from actors.rules.tenant import (
    EPOCH,
    RECENT_KEYS,
    Counts,
    TenantState,
    add,
    close_window,
    window_end,
    window_start_for,
)
from wire.records import TenantSummary

TENANT = "tenant-a"
INTERVAL = 60.0
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def delta(
    key: str,
    status: str | None = "complete",
    *,
    events: int = 3,
    analyses: dict[str, int] | None = None,
    dead_letters: int = 0,
) -> RollupDelta:
    return RollupDelta(
        key=key,
        job_id=key.partition("#")[0],
        status=status,  # type: ignore[arg-type]
        events=events,
        analyses={"detect": 2} if analyses is None else analyses,
        dead_letters=dead_letters,
    )


def fresh() -> TenantState:
    return TenantState(tenant_id=TENANT)


# --- add ---------------------------------------------------------------------------


def test_add_counts_a_delta_key_once_across_calls() -> None:
    state = fresh()
    assert add(state, [delta("job-1#1")], T0, INTERVAL) == 1
    assert add(state, [delta("job-1#1")], T0, INTERVAL) == 0
    assert state.counts == Counts(jobs_completed=1, events=3, analyses={"detect": 2})


def test_add_counts_a_delta_key_once_within_a_batch() -> None:
    state = fresh()
    assert add(state, [delta("job-1#1"), delta("job-1#1")], T0, INTERVAL) == 1
    assert state.counts.jobs_completed == 1


def test_add_counts_each_status_events_analyses_and_dead_letters() -> None:
    state = fresh()
    deltas = [
        delta("job-1#1", "complete", events=4, analyses={"detect": 2, "ocr": 1}),
        delta("job-2#1", "timed_out", events=2, analyses={"ocr": 1}),
        delta("job-2#2", "amended", events=1, analyses={"ocr": 1}, dead_letters=1),
        delta("job-3#1", None, events=0, analyses={}, dead_letters=2),
    ]
    assert add(state, deltas, T0, INTERVAL) == 4
    assert state.counts == Counts(
        jobs_completed=1,
        jobs_timed_out=1,
        jobs_amended=1,
        events=7,
        analyses={"detect": 2, "ocr": 3},
        dead_letters=3,
    )


def test_negative_analyses_delta_takes_counts_back_off() -> None:
    """An amendment that refuses parts counted before reports a negative delta."""
    state = fresh()
    add(state, [delta("job-1#1", "timed_out", analyses={"ocr": 2})], T0, INTERVAL)
    add(state, [delta("job-1#2", "amended", analyses={"ocr": -2})], T0, INTERVAL)
    assert state.counts.analyses == {"ocr": 0}


def test_first_delta_opens_the_window_and_later_ones_keep_it() -> None:
    state = fresh()
    assert state.window_start is None
    assert window_end(state, INTERVAL) is None
    add(state, [delta("job-1#1")], T0 + timedelta(seconds=15), INTERVAL)
    assert state.window_start == T0
    add(state, [delta("job-2#1")], T0 + timedelta(seconds=45), INTERVAL)
    assert state.window_start == T0
    assert window_end(state, INTERVAL) == T0 + timedelta(seconds=INTERVAL)


def test_only_duplicates_do_not_open_a_window() -> None:
    state = fresh()
    add(state, [delta("job-1#1")], T0, INTERVAL)
    close_window(state, INTERVAL)
    assert add(state, [delta("job-1#1")], T0 + timedelta(minutes=5), INTERVAL) == 0
    assert state.window_start is None


# --- windows -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "interval_s", "start"),
    [
        (T0, 60.0, T0),
        (T0 + timedelta(seconds=59, microseconds=999_999), 60.0, T0),
        (T0 + timedelta(seconds=60), 60.0, T0 + timedelta(seconds=60)),
        (T0 + timedelta(minutes=7, seconds=30), 300.0, T0 + timedelta(minutes=5)),
        (T0 + timedelta(minutes=59), 3600.0, T0),
        (T0 + timedelta(hours=11), 86_400.0, datetime(2026, 1, 1, tzinfo=UTC)),
        (T0 + timedelta(seconds=1.75), 0.5, T0 + timedelta(seconds=1.5)),
        (T0 + timedelta(seconds=10), 7.0, EPOCH + timedelta(seconds=7 * 252_466_972)),
    ],
)
def test_window_start_aligns_to_interval_multiples_since_the_epoch(
    now: datetime, interval_s: float, start: datetime
) -> None:
    assert window_start_for(now, interval_s) == start


@settings(max_examples=300, deadline=None)
@given(
    now=st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.just(UTC),
    ),
    interval_s=st.sampled_from([1.0, 5.0, 60.0, 300.0, 3600.0, 86_400.0, 0.5, 0.25]),
)
def test_window_contains_now_and_starts_on_a_multiple(
    now: datetime, interval_s: float
) -> None:
    start = window_start_for(now, interval_s)
    assert start <= now < start + timedelta(seconds=interval_s)
    micros = (start - EPOCH) // timedelta(microseconds=1)
    assert micros % round(interval_s * 1_000_000) == 0


def test_window_contains_a_time_on_a_boundary_for_a_decimal_interval() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    start = window_start_for(now, 0.1)
    assert start <= now < start + timedelta(seconds=0.1)


# --- close_window --------------------------------------------------------------------


def test_close_window_returns_a_summary_of_the_window_and_resets() -> None:
    state = fresh()
    add(
        state,
        [
            delta("job-1#1", "complete", events=4, analyses={"ocr": 1, "detect": 2}),
            delta("job-2#1", "timed_out", events=1, analyses={}, dead_letters=1),
        ],
        T0 + timedelta(seconds=30),
        INTERVAL,
    )
    summary = close_window(state, INTERVAL)
    assert summary == TenantSummary(
        summary_id=f"{TENANT}/2026-01-01T12:00:00+00:00",
        tenant_id=TENANT,
        window_start="2026-01-01T12:00:00+00:00",
        window_end="2026-01-01T12:01:00+00:00",
        jobs_completed=1,
        jobs_timed_out=1,
        jobs_amended=0,
        events=5,
        analyses={"detect": 2, "ocr": 1},
        dead_letters=1,
    )
    assert list(summary.analyses) == ["detect", "ocr"]
    assert state.window_start is None
    assert state.counts == Counts()
    assert state.summaries == 1


def test_close_window_without_an_open_window_returns_none() -> None:
    state = fresh()
    assert close_window(state, INTERVAL) is None
    assert state.summaries == 0


def test_next_window_after_close_counts_afresh() -> None:
    state = fresh()
    add(state, [delta("job-1#1")], T0, INTERVAL)
    first = close_window(state, INTERVAL)
    add(state, [delta("job-2#1", "amended")], T0 + timedelta(seconds=90), INTERVAL)
    second = close_window(state, INTERVAL)
    assert first is not None
    assert second is not None
    assert second.window_start == first.window_end
    assert (second.jobs_completed, second.jobs_amended) == (0, 1)
    assert first.summary_id != second.summary_id


def test_a_key_counted_in_a_closed_window_is_not_counted_again() -> None:
    state = fresh()
    add(state, [delta("job-1#1")], T0, INTERVAL)
    close_window(state, INTERVAL)
    add(
        state,
        [delta("job-1#1"), delta("job-2#1")],
        T0 + timedelta(seconds=60),
        INTERVAL,
    )
    assert state.counts.jobs_completed == 1


# --- recent keys ---------------------------------------------------------------------


def test_recent_keys_are_bounded_and_drop_the_oldest_first() -> None:
    state = fresh()
    deltas = [delta(f"job-{i}#1") for i in range(RECENT_KEYS + 5)]
    assert add(state, deltas, T0, INTERVAL) == RECENT_KEYS + 5
    assert len(state.recent) == RECENT_KEYS
    assert next(iter(state.recent)) == "job-5#1"
    # The forgotten oldest key counts again; a remembered one does not.
    assert add(state, [delta("job-0#1")], T0, INTERVAL) == 1
    assert add(state, [delta("job-6#1")], T0, INTERVAL) == 0
    assert len(state.recent) == RECENT_KEYS


def test_recent_keys_drop_oldest_first_across_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tenant_rules, "RECENT_KEYS", 3)
    state = fresh()
    for key in ["a#1", "b#1", "c#1", "d#1"]:
        add(state, [delta(key)], T0, INTERVAL)
    assert list(state.recent) == ["b#1", "c#1", "d#1"]
    add(state, [delta("b#1"), delta("e#1")], T0, INTERVAL)
    assert list(state.recent) == ["c#1", "d#1", "e#1"]
