"""A tenant's rollup: counts over processing-time windows.

Jobs report each publication as a ``RollupDelta``. The tenant adds it to the
open window (once per delta key, so a retried report counts once) and, when
the window ends, emits a ``tenant.summary`` record for it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from actors.rules.job import RollupDelta
from wire.records import TenantSummary

# Keys of recent deltas kept for de-duplication. A retried report arrives
# seconds or minutes after the first, so a generous count bound is enough and
# keeps the state (carried across continue-as-new) small.
RECENT_KEYS = 20_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The default of TenantSettings, which the worker's settings read from here.
DEFAULT_SUMMARY_INTERVAL_S = 60.0


class TenantSettings(msgspec.Struct, frozen=True, kw_only=True):
    summary_interval_s: float = DEFAULT_SUMMARY_INTERVAL_S
    continue_as_new_after: int | None = None


class Counts(msgspec.Struct, kw_only=True):
    jobs_completed: int = 0
    jobs_timed_out: int = 0
    jobs_amended: int = 0
    events: int = 0
    analyses: dict[str, int] = msgspec.field(default_factory=dict)
    dead_letters: int = 0


class TenantState(msgspec.Struct, kw_only=True):
    tenant_id: str
    window_start: datetime | None = None
    counts: Counts = msgspec.field(default_factory=Counts)
    recent: dict[str, None] = msgspec.field(default_factory=dict)
    summaries: int = 0


class RollupBatch(msgspec.Struct, frozen=True, kw_only=True):
    """The tenant update's input: deltas from one or more jobs."""

    deltas: list[RollupDelta]


def window_start_for(now: datetime, interval_s: float) -> datetime:
    """Windows are aligned to multiples of the interval since the epoch."""
    # Whole microseconds: float seconds would misplace times on a boundary.
    interval = max(1, round(interval_s * 1_000_000))
    elapsed = (now - EPOCH) // timedelta(microseconds=1)
    return EPOCH + timedelta(microseconds=elapsed - elapsed % interval)


def add(
    state: TenantState, deltas: list[RollupDelta], now: datetime, interval_s: float
) -> int:
    """Add deltas to the open window; returns how many were new."""
    added = 0
    for delta in deltas:
        if delta.key in state.recent:
            continue
        state.recent[delta.key] = None
        added += 1
        if state.window_start is None:
            state.window_start = window_start_for(now, interval_s)
        counts = state.counts
        match delta.status:
            case "complete":
                counts.jobs_completed += 1
            case "timed_out":
                counts.jobs_timed_out += 1
            case "amended":
                counts.jobs_amended += 1
        counts.events += delta.events
        counts.dead_letters += delta.dead_letters
        for analysis_type, n in delta.analyses.items():
            counts.analyses[analysis_type] = counts.analyses.get(analysis_type, 0) + n
    # Dicts keep insertion order, so the oldest keys are first.
    excess = len(state.recent) - RECENT_KEYS
    if excess > 0:
        for key in list(state.recent)[:excess]:
            del state.recent[key]
    return added


def window_end(state: TenantState, interval_s: float) -> datetime | None:
    if state.window_start is None:
        return None
    return state.window_start + timedelta(seconds=interval_s)


def close_window(state: TenantState, interval_s: float) -> TenantSummary | None:
    """Take the open window's summary and start afresh; None if none is open."""
    end = window_end(state, interval_s)
    if state.window_start is None or end is None:
        return None
    counts = state.counts
    start = state.window_start.isoformat()
    summary = TenantSummary(
        summary_id=f"{state.tenant_id}/{start}",
        tenant_id=state.tenant_id,
        window_start=start,
        window_end=end.isoformat(),
        jobs_completed=counts.jobs_completed,
        jobs_timed_out=counts.jobs_timed_out,
        jobs_amended=counts.jobs_amended,
        events=counts.events,
        analyses=dict(sorted(counts.analyses.items())),
        dead_letters=counts.dead_letters,
    )
    state.window_start = None
    state.counts = Counts()
    state.summaries += 1
    return summary
