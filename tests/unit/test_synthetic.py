"""The synthetic workloads: the realistic shape is what it says it is."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace

from wire import Rejection, parse_event
from wire.events import AnalysisResult, JobOpened
from wire.synthetic import REALISTIC, REALISTIC_TENANTS, WorkloadSpec, generate


def test_the_realistic_shape_varies_types_and_parts_per_job() -> None:
    spec = replace(REALISTIC, jobs=400)
    lines, expected = generate(spec)
    parsed = [parse_event(line) for line in lines]
    events = [e for e in parsed if not isinstance(e, Rejection)]
    types: dict[str, set[str]] = defaultdict(set)
    parts: dict[tuple[str, str], int] = {}
    for event in events:
        key = f"{event.tenant_id}/{event.job_id}"
        if isinstance(event, JobOpened):
            assert 1 <= len(event.required) <= 4
        elif isinstance(event, AnalysisResult) and event.analysis_type != "unrequested":
            types[key].add(event.analysis_type)
            parts[key, event.analysis_type] = event.parts
    assert {len(t) for t in types.values()} == {1, 2, 3, 4}
    assert set(parts.values()) == {1, 2, 3, 4, 5}
    for key, by_type in expected.payloads.items():
        assert sorted(by_type) == sorted(types[key])
        for analysis_type, payloads in by_type.items():
            assert len(payloads) == parts[key, analysis_type]
    # About nine events a job with the redeliveries, as real traffic.
    assert 8.0 <= len(events) / spec.jobs <= 10.0
    assert sum(isinstance(e, Rejection) for e in parsed) > 0


def test_the_realistic_tenants_have_unicode_and_the_longest_ids() -> None:
    lines, _ = generate(replace(REALISTIC, jobs=70))
    tenants = Counter(
        e.tenant_id for e in map(parse_event, lines) if not isinstance(e, Rejection)
    )
    assert set(tenants) == set(REALISTIC_TENANTS)
    assert max(map(len, tenants)) == 128
    assert any(not t.isascii() for t in tenants)


def test_a_fixed_spec_draws_the_same_stream_as_before_the_ranges() -> None:
    # The ranges draw random numbers only when set: fixed specs (and the
    # figures taken with them) are unchanged.
    spec = WorkloadSpec(jobs=20, types=3, parts=2, seed=5)
    lines, expected = generate(spec)
    assert all(len(p) == 2 for by in expected.payloads.values() for p in by.values())
    assert all(len(by) == 3 for by in expected.payloads.values())
    assert generate(spec)[0] == lines
