"""The trickle benchmark's machinery on one tiny rate, so that it cannot rot
unnoticed. Figures are checked for presence and consistency, never for
speed: timings belong in BENCHMARKS.md."""

from __future__ import annotations

from bench.run import markdown as bench_markdown
from bench.trickle import QUICK, markdown, trickle_bench


async def test_the_trickle_measures_a_rate_and_searches_what_it_measured() -> None:
    results = await trickle_bench(quick=True, rates=(2_000,))
    figures = results["trickle-2000"]
    assert figures["jobs"] > 0
    # Every job has a result that covers all its events (stragglers too:
    # amended, or complete if the straggler beat the timed-out version).
    assert figures["unresolved_jobs"] == 0
    assert figures["results"] == figures["jobs"]
    assert 0 <= figures["amended"] <= figures["stragglers"]
    assert figures["events_per_min"] > 0
    assert 0 < figures["p50_s"] <= figures["p95_s"] <= figures["p99_s"]
    samples = figures["backlog"]
    assert len(samples) >= QUICK.duration_s / QUICK.sample_s - 1
    assert all(s["due"] >= s["covered"] >= 0 for s in samples)
    assert samples[-1]["covered"] <= figures["events"]
    assert isinstance(figures["growing"], bool)
    assert figures["sustained"] == (figures["p99_s"] <= 5 and not figures["growing"])
    assert figures["cpu_cores"]["machine"] > 0
    found = results["trickle-search"]
    assert [s["rate_per_min"] for s in found["steps"]] == [2_000]
    assert found["highest_sustained_per_min"] == (
        2_000 if figures["sustained"] else None
    )
    table = markdown(results)
    assert "| 2,000 |" in table
    assert "Highest sustained offered rate" in table
    # The rate's row also joins bench.run's table, as a workload's would.
    assert "| trickle-2000 |" in bench_markdown(
        {"calibration": {"deliveries_per_s": 100.0}, "baseline": figures, **results}
    )
