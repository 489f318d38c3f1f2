"""The bench's tables: throughput counted to the last close, beside the
floor (``bench.run.steady``, ``markdown``)."""

from __future__ import annotations

from bench.run import markdown, steady

RUN = {
    "events": 9_000,
    "results": 1_000,
    "seconds": 10.0,
    "closed_after_results_s": 40.0,
    "events_per_min": 54_000,
    "p50_s": 1.0,
    "p95_s": 2.0,
    "p99_s": 3.0,
    "worker_cpu_s_per_1k": 1.0,
    "server_cpu_s_per_1k": 2.0,
    "server_cpu_s_per_1k_closed": 4.0,
    "peak_worker_rss_mib": 100.0,
}


def test_steady_state_throughput_counts_until_the_last_job_closed() -> None:
    # 1,000 jobs, results after 10 s, the last close 40 s later: 20 jobs/s.
    assert steady(RUN, 100.0) == "10,800, 20.0, 20%"
    assert steady(RUN, None) == "10,800, 20.0"
    assert steady({**RUN, "closed_after_results_s": 0.0}, None) == "54,000, 100.0"


def test_a_run_that_did_not_wait_for_closes_shows_no_steady_state() -> None:
    without = {k: v for k, v in RUN.items() if k != "closed_after_results_s"}
    assert steady(without, 100.0) == ""


def test_the_table_shows_both_throughputs_and_the_share_of_the_floor() -> None:
    floor = {
        "start-eager-timer": {
            "workflows_per_s": 100.0,
            "server_cpu_ms_each": 10.0,
            "caller_and_worker_cpu_ms_each": 5.0,
        }
    }
    table = markdown(
        {
            "calibration": {"deliveries_per_s": 100.0},
            "floor": floor,
            "realistic": RUN,
            "baseline": {**RUN, "events_per_min": 27_000},
        }
    )
    row = next(line for line in table.splitlines() if line.startswith("| realistic"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:7] == [
        "realistic",
        "9,000",
        "54,000",
        "2.0",
        "100.0",
        "100%",
        "10,800, 20.0, 20%",
    ]
