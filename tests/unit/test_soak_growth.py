"""The soak's two RSS growth figures after warm-up: first to last sample, and
the least-squares trend through every sample."""

from __future__ import annotations

import pytest

from bench.soak import growth, trend


def _samples(rss: list[float], step_s: float = 60.0) -> list[dict[str, object]]:
    return [{"t": i * step_s, "worker_rss_mib": r} for i, r in enumerate(rss)]


def test_a_steady_rise_reads_the_same_both_ways() -> None:
    samples = _samples([100, 101, 102, 103, 104, 105])
    assert growth(samples, 60) == pytest.approx(0.04)
    fit = trend(samples, 60)
    assert fit == {
        "mib_per_min": 1.0,
        "from_mib": 101.0,
        "to_mib": 105.0,
        "growth": pytest.approx(0.04, abs=1e-3),
    }


def test_a_spike_in_the_first_sample_moves_first_to_last_not_the_trend() -> None:
    # flat at 100 MiB but for one spike where the warm-up ends
    samples = _samples([90, 130, 100, 100, 100, 100, 100, 100, 100, 100, 100])
    assert growth(samples, 60) == pytest.approx(-0.231, abs=1e-3)
    fit = trend(samples, 60)
    assert fit is not None
    assert abs(fit["growth"]) < abs(growth(samples, 60))
    assert fit["mib_per_min"] < 0  # the spike pulls the line's start up


def test_samples_before_the_warm_up_are_left_out() -> None:
    samples = _samples([10, 50, 100, 100, 100, 100])
    fit = trend(samples, 120)
    assert fit is not None
    assert fit["growth"] == 0.0
    assert fit["mib_per_min"] == 0.0


def test_too_few_samples_after_the_warm_up_give_no_trend() -> None:
    assert trend(_samples([100, 101, 102]), 120) is None
    assert trend([], 0) is None
