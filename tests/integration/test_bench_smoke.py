"""The benchmark's machinery on tiny workloads, so that it cannot rot
unnoticed. Figures are not asserted: timings belong in BENCHMARKS.md."""

from __future__ import annotations

from dataclasses import replace

from bench.floor import PRIMITIVES
from bench.ingress_vs_emit import compare
from bench.ingress_vs_emit import markdown as ingress_markdown
from bench.ingress_vs_emit import parse_args as ingress_vs_emit_args
from bench.run import WORKLOADS, markdown, run_floor, run_naive, run_pipeline, sized
from bench.sink_write import main, parse_args
from bench.sinks_e2e import SINKS, SPECS, run_sinks
from bench.sinks_e2e import markdown as sinks_markdown
from wire import Rejection, parse_event
from wire.synthetic import REALISTIC, generate

# A few jobs take seconds; a run that loses one fails at this bound, not at
# the bench's 30 minutes.
LIMIT_S = 120


async def test_bench_measures_the_pipeline_and_the_naive_baseline() -> None:
    pipeline = await run_pipeline(
        sized(WORKLOADS["burst"], 10, "smoke"), limit_s=LIMIT_S
    )
    baseline = await run_naive(sized(WORKLOADS["burst"], 3, "smoke"), limit_s=LIMIT_S)
    floor = await run_floor(5)
    assert set(floor) == set(PRIMITIVES)
    assert all(f["workflows_per_s"] > 0 for f in floor.values())
    assert pipeline["results"] == 10
    # counted after the proxies' reports and the tenants' summaries settled
    assert pipeline["actions_by_type"]["Tenant"] > 0
    assert baseline["actions_by_type"]["NaiveJob"] == baseline["actions"]
    assert baseline["results"] == 3
    for figures in (pipeline, baseline):
        assert figures["events_per_min"] > 0
        assert figures["history_bytes_per_event"] > 0
        assert figures["actions"] > 0
        assert figures["actions_per_1000_events"] > 0
        assert figures["actions_per_month_at_20k"] > 0
        assert figures["actions_by_kind"]["workflow_started"] > 0
        assert figures["actions_by_kind"]["update_accepted"] > 0
        assert figures["p50_s"] <= figures["p99_s"]
    table = markdown(
        {
            "calibration": {"deliveries_per_s": 100.0},
            "floor": floor,
            "burst": pipeline,
            "baseline": baseline,
        }
    )
    assert "| burst |" in table
    assert "| baseline |" in table
    assert "| start-eager |" in table
    assert "actions/1k events" in table
    assert table.count("| baseline |") == 2  # throughput and actions


async def test_the_naive_baseline_drops_the_invalid_lines_of_the_realistic_shape() -> (
    None
):
    spec = replace(sized(REALISTIC, 12, "smoke-naive"), invalid=0.1)
    lines, _ = generate(spec)
    assert any(isinstance(parse_event(line), Rejection) for line in lines)
    baseline = await run_naive(spec, limit_s=LIMIT_S)
    assert baseline["results"] == 12


def test_sink_write_measures_records_and_model_rows(tmp_path) -> None:
    for kind in ([], ["--rows", "job_parts"]):
        url = f"sqlite:{tmp_path}/{len(kind)}.db"
        args = parse_args(
            ["--sink", url, "--writers", "2", "--batches", "2", "--batch", "30", *kind]
        )
        report = main(args)
        assert report["ok"], report
        assert report["new"] == report["records"] == 120
        assert report["kind"] == (kind[1] if kind else "job.result")


async def test_bench_runs_a_workload_end_to_end_with_each_sink(postgres_url) -> None:
    spec = replace(SPECS["acceptance"], jobs=12, open_jobs=12, run="smoke-sinks")
    results = await run_sinks({"acceptance": spec}, postgres=postgres_url)
    assert set(results) == {f"acceptance/{sink}" for sink in SINKS}
    for figures in results.values():
        assert figures["results"] == 12, figures
        assert figures["events_per_min"] > 0
        assert figures["share_of_file"] > 0
    assert results["acceptance/file"]["share_of_file"] == 1.0
    table = sinks_markdown(results)
    assert "| acceptance | postgresql |" in table


async def test_the_ingress_is_measured_against_emit_on_one_workload() -> None:
    result = await compare(
        ingress_vs_emit_args(["--jobs", "30", "--rounds", "1", "--timeout", "120"])
    )
    (row,) = result["rounds"]
    for name in ("ingress", "emit"):
        figures = row[name]
        assert figures["events"] == 30 * 7  # job.opened + 3 types x 2 parts
        assert figures["results"] == 30
        assert figures["events_per_min"] > 0
        assert figures["server_cpu_s_per_1k"] > 0
    # Every push acknowledged once (a 503 is retried, as Pub/Sub would).
    assert row["ingress"]["acknowledged"] == 210
    assert len(result["ingress_share_of_emit"]) == 1
    assert "Ingress end to end as a share of `script.emit`" in ingress_markdown(result)
