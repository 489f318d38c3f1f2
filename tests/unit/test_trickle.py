"""The trickle workload: the rate, the spread and the stragglers it promises."""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict

import msgspec
import pytest

from bench.trickle import TrickleRun, search, slope, trend
from wire.events import AnalysisResult, JobOpened
from wire.trickle import TrickleSpec, build, mean_events, trickle
from wire.validate import Limits, Rejection, parse_event

SEED = 7
SPEC = TrickleSpec(rate_per_min=6_000, duration_s=600, seed=SEED, run="t")


@pytest.fixture(scope="module")
def built():
    return build(SPEC)


def test_the_same_seed_gives_the_same_stream_and_another_seed_another() -> None:
    spec = TrickleSpec(rate_per_min=3_000, duration_s=60, seed=SEED)
    assert list(trickle(spec)) == list(trickle(spec))
    other = TrickleSpec(rate_per_min=3_000, duration_s=60, seed=SEED + 1)
    assert list(trickle(spec)) != list(trickle(other))


def test_events_come_in_time_order_and_every_line_is_a_valid_event(built) -> None:
    _, events = built
    times = [e.send_at_s for e in events]
    assert times == sorted(times), f"seed {SEED}"
    for event in events:
        assert not isinstance(parse_event(event.line, Limits()), Rejection)


def test_the_offered_rate_is_met_in_events_per_minute(built) -> None:
    jobs, events = built
    # Past the first window the stream is steady: count events sent in
    # [30 s, duration) against the offered rate (Poisson: well within 5%).
    steady = [e for e in events if 30 <= e.send_at_s < SPEC.duration_s]
    rate = len(steady) / (SPEC.duration_s - 30) * 60
    assert rate == pytest.approx(SPEC.rate_per_min, rel=0.05), f"seed {SEED}"
    per_job = len(events) / len(jobs)
    assert per_job == pytest.approx(mean_events(SPEC), rel=0.05)
    assert mean_events(SPEC) == 8.5


def test_jobs_arrive_as_a_poisson_stream(built) -> None:
    jobs, _ = built
    gaps = [b.start_s - a.start_s for a, b in itertools.pairwise(jobs)]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(60 / (SPEC.rate_per_min / 8.5), rel=0.05)
    # Exponential gaps: the standard deviation equals the mean.
    assert statistics.pstdev(gaps) == pytest.approx(mean, rel=0.1), f"seed {SEED}"


def test_each_job_opens_first_and_spreads_its_parts_over_its_window(built) -> None:
    jobs, events = built
    by_job: dict[str, list[tuple[float, object]]] = defaultdict(list)
    for e in events:
        by_job[e.key].append((e.send_at_s, msgspec.json.decode(e.line)))
    spreads = []
    for job in jobs:
        stream = by_job[job.key]
        assert stream[0][1]["type"] == "job.opened"
        assert stream[0][0] == job.start_s
        assert 20 <= job.window_s <= 30
        on_time = [t for t, _ in stream[1:] if t != job.straggler_at_s]
        assert all(job.start_s < t <= job.start_s + job.window_s for t in on_time)
        assert max(on_time) == job.completes_at_s
        spreads.append(max(on_time) - job.start_s)
    # Parts reach to near the window's end: slots with jitter, not a burst.
    multi = [s for j, s in zip(jobs, spreads, strict=True) if j.events > 3]
    assert 20 <= statistics.fmean(multi) <= 30, f"seed {SEED}"


def test_every_job_is_complete_once_all_its_events_are_in(built) -> None:
    jobs, events = built
    opened: dict[str, JobOpened] = {}
    parts: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    ids = set()
    for e in events:
        event = parse_event(e.line, Limits())
        assert event.event_id not in ids  # no duplicates in a trickle
        ids.add(event.event_id)
        key = f"{event.tenant_id}/{event.job_id}"
        match event:
            case JobOpened():
                opened[key] = event
            case AnalysisResult():
                parts[key][event.analysis_type].add(event.part)
                counts[key][event.analysis_type] = event.parts
    assert len(opened) == len(jobs)
    for job in jobs:
        required = opened[job.key].required
        assert 1 <= len(required) <= 4
        assert set(parts[job.key]) == set(required)
        for analysis_type in required:
            n = counts[job.key][analysis_type]
            assert 1 <= n <= 5
            assert parts[job.key][analysis_type] == set(range(n))
        assert job.events == 1 + sum(len(p) for p in parts[job.key].values())


def test_a_few_jobs_straggle_after_their_deadline_within_the_linger(built) -> None:
    jobs, events = built
    stragglers = [j for j in jobs if j.straggler_at_s is not None]
    assert 0.01 <= len(stragglers) / len(jobs) <= 0.03, f"seed {SEED}"
    deadlines = {
        msgspec.json.decode(e.line)["job_id"]: msgspec.json.decode(e.line).get(
            "deadline_s"
        )
        for e in events
        if b'"job.opened"' in e.line
    }
    for job in jobs:
        deadline = deadlines[job.key.split("/")[1]]
        if job.straggler_at_s is None:
            assert deadline is None  # an on-time job never times out
            continue
        # Timed out at the deadline (version 1), then amended (version 2)
        # by a straggler that lands while the job still lingers.
        assert deadline == pytest.approx(job.window_s + SPEC.grace_s, abs=1e-3)
        late = job.straggler_at_s - (job.start_s + deadline)
        assert 0.25 * SPEC.linger_s <= late + 1e-3
        assert late <= 0.75 * SPEC.linger_s + 1e-3
        assert job.straggler_at_s < SPEC.duration_s
        assert job.completes_at_s < job.start_s + job.window_s


def _fake(sustained_below: float):
    """A measure that sustains every rate below ``sustained_below``."""
    calls: list[float] = []

    async def measure(rate: float) -> dict[str, object]:
        calls.append(rate)
        return {
            "sustained": rate < sustained_below,
            "p99_s": 1.0,
            "backlog_slope_per_s": 0.0,
            "unresolved_jobs": 0,
        }

    return measure, calls


async def test_the_search_doubles_then_bisects_to_the_highest_sustained_rate() -> None:
    measure, calls = _fake(13_000)
    found = await search(measure, start=5_000)
    assert calls[:3] == [5_000, 10_000, 20_000]
    assert calls[3] == 15_000  # halfway between 10,000 (ok) and 20,000 (not)
    high, low = found["highest_sustained_per_min"], found["lowest_failed_per_min"]
    assert high < 13_000 <= low
    assert low / high <= 1.2
    assert [s["rate_per_min"] for s in found["steps"]] == calls


async def test_the_search_steps_down_after_a_failure_and_stops_at_bounds() -> None:
    measure, calls = _fake(3_000)
    found = await search(measure, start=5_000)
    assert calls[:2] == [5_000, 2_500]
    assert found["highest_sustained_per_min"] < 3_000
    measure, calls = _fake(1e9)
    found = await search(measure, start=2_000, ceiling=4_000, max_steps=2)
    assert calls == [2_000, 4_000]
    assert found == found | {"highest_sustained_per_min": 4_000}
    assert found["lowest_failed_per_min"] is None


def test_a_backlog_grows_when_its_slope_passes_two_percent_of_the_rate() -> None:
    run = TrickleRun(duration_s=210)
    rate = 6_000  # 100 events/s: the limit is 2 events/s
    flat = [{"t": t, "backlog": 1_000 + (37 * t) % 50} for t in range(10, 220, 10)]
    steep = [{"t": t, "backlog": 1_000 + 3 * t} for t in range(10, 220, 10)]
    assert trend(flat, rate, run)["growing"] is False
    grown = trend(steep, rate, run)
    assert grown["growing"] is True
    assert grown["backlog_slope_per_s"] == pytest.approx(3.0)
    assert grown["trend_window_s"] == 180  # the last 3 minutes, past the warm-up
    assert trend(steep[:2], rate, run)["growing"] is None  # too few samples
    assert slope([(0, 0), (1, 2), (2, 4)]) == pytest.approx(2.0)
