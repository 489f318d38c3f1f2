"""bench.profile's folding of py-spy stacks and of the server's metrics."""

from __future__ import annotations

import pytest

from bench.profile import fold, long_polls, parse_args, server_sums, server_table

SCRAPE = """\
# HELP persistence_latency persistence_latency histogram
# TYPE persistence_latency histogram
persistence_latency_bucket{operation="CreateTask",service_name="matching",le="+Inf"} 4
persistence_latency_sum{operation="UpdateWorkflowExecution",service_name="history"} 0.5
persistence_latency_count{operation="UpdateWorkflowExecution",service_name="history"} 10
persistence_latency_sum{operation="CreateTask",service_name="matching"} 0.1
persistence_latency_count{operation="CreateTask",service_name="matching"} 4
# TYPE service_latency histogram
service_latency_sum{operation="PollWorkflowTaskQueue",service_name="frontend"} 90
service_latency_count{operation="PollWorkflowTaskQueue",service_name="frontend"} 3
service_latency_sum{operation="StartWorkflowExecution",service_name="frontend"} 0.2
service_latency_count{operation="StartWorkflowExecution",service_name="frontend"} 20
"""


def test_server_table_counts_the_window_and_leaves_out_long_polls() -> None:
    after = server_sums(SCRAPE)
    before = {
        ("persistence_latency_sum", "history", "UpdateWorkflowExecution"): 0.1,
        ("persistence_latency_count", "history", "UpdateWorkflowExecution"): 2,
    }
    # 1,000 events in a 2 s window: per_1k 1.0.
    rows = server_table(
        before, after, prefix="persistence_latency", per_1k=1.0, seconds=2.0
    )
    assert rows[0] == {
        "service": "history",
        "operation": "UpdateWorkflowExecution",
        "per_1k_events": 8.0,
        "mean_ms": 50.0,
        "seconds_per_s": 0.2,
    }
    assert [r["operation"] for r in rows] == ["UpdateWorkflowExecution", "CreateTask"]
    api = server_table({}, after, prefix="service_latency", per_1k=0.5, seconds=1.0)
    assert [r["operation"] for r in api] == ["StartWorkflowExecution"]
    assert api[0]["per_1k_events"] == 10.0
    # the long polls left out are counted apart, never timed
    before_polls = {("service_latency_count", "frontend", "PollWorkflowTaskQueue"): 1.0}
    assert long_polls(before_polls, after, per_1k=0.5) == {"PollWorkflowTaskQueue": 1.0}


def test_fold_gives_inclusive_and_self_shares() -> None:
    lines = [
        'process 1:"python";Thread 7 (active);run (asyncio/events.py);'
        "activate (temporalio/worker/_workflow.py);encode (msgspec) 3",
        'process 1:"python";Thread 7 (active);run (asyncio/events.py);'
        "compress (zstandard) 1",
        "not a sample line",
    ]
    folded = fold(lines)
    assert folded["samples"] == 4
    inclusive = {r["function"]: r["share"] for r in folded["inclusive"]}
    assert inclusive["run (asyncio/events.py)"] == 1.0
    assert inclusive["activate (temporalio/worker/_workflow.py)"] == 0.75
    own = {r["function"]: r["share"] for r in folded["self"]}
    assert own == {"encode (msgspec)": 0.75, "compress (zstandard)": 0.25}


def test_fold_of_nothing_is_empty() -> None:
    assert fold([]) == {"samples": 0, "inclusive": [], "self": []}


def test_the_window_must_fit_in_the_sending() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--duration", "60", "--start", "40", "--seconds", "30"])
