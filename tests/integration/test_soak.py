"""The soak's 2-minute version (``make soak`` runs 30 minutes at 20,000
events/min): a trickle through the real pipeline, sampled as it runs, then
audited exactly. Figures are checked for presence, the audit for exactness:
nothing lost, nothing doubled."""

from __future__ import annotations

import pytest

from bench.soak import chart, markdown, soak


@pytest.mark.slow
async def test_a_two_minute_soak_loses_and_doubles_nothing(tmp_path) -> None:
    result = await soak(
        minutes=2,
        rate_per_min=5_000,
        sample_s=30,
        linger_s=15,
    )
    audit = result["audit"]
    assert audit["jobs"] > 500
    assert audit["lost_jobs"] == 0, audit["lost_examples"]
    assert audit["doubled_results"] == 0
    assert audit["events_covered"] == audit["events_expected"]
    # A straggler amends its job's timed-out version, unless the pipeline
    # lagged enough that it reached the job before the deadline (then the
    # job completes at version 1): either way its events are covered above.
    assert 0 <= audit["stragglers_amended"] <= audit["stragglers"]
    samples = result["samples"]
    assert len(samples) >= 4
    assert all(s["worker_rss_mib"] > 0 for s in samples)
    # the regions are the same mappings RSS counts, split by where they live
    for s in samples:
        regions, rss = s["worker_memory_mib"], s["worker_rss_mib"]
        assert regions["heap"] > 0
        assert regions["files"] > 0
        assert abs(sum(regions.values()) - rss) < 0.1 * rss
    assert len(samples[-1]["proxy_history_length"]) == 4  # every shard's proxy
    assert max(s["running_jobs"] for s in samples) > 0
    assert samples[-1]["running_jobs"] == 0  # every job closed within the run
    assert samples[-1]["database_mib"] > samples[0]["database_mib"]
    assert result["rss_growth_after_warm_up"] is not None
    assert result["rss_trend_after_warm_up"]["from_mib"] > 0
    assert "| t s | worker RSS MiB |" in markdown(result)
    chart(result, tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 0
