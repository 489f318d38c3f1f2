"""bench.profile on one tiny trickle, so that it cannot rot unnoticed: the
server's metrics and the worker's samples are read and folded, on the real
stack. Figures are checked for presence and consistency, never for speed."""

from __future__ import annotations

from bench.profile import Window, markdown, profile
from bench.trickle import QUICK


async def test_the_profile_reads_the_server_and_samples_the_worker() -> None:
    results = await profile(2_000, QUICK, Window(start_s=5, seconds=8, rate_hz=50))
    figures = results["profile-trickle-2000"]
    assert figures["unresolved_jobs"] == 0
    p = figures["profile"]
    server, worker = p["server"], p["worker"]
    assert p["events_acknowledged"] > 0
    operations = {(r["service"], r["operation"]) for r in server["persistence"]}
    # Every job start writes a new execution; every workflow task, an update.
    assert ("history", "CreateWorkflowExecution") in operations
    assert ("history", "UpdateWorkflowExecution") in operations
    assert all(r["per_1k_events"] > 0 for r in server["persistence"])
    assert not any(r["operation"].startswith("Poll") for r in server["api"])
    assert server["cpu_s_per_1k"] > 0
    assert worker["samples"] > 0, worker
    assert 0 < worker["gil_share"] <= 1
    assert worker["inclusive"][0]["share"] >= worker["self"][0]["share"]
    table = markdown(results)
    assert "| persistence: service |" in table
    assert "| worker, self |" in table
