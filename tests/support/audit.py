"""What a sink holds against what a workload should have produced.

The audit counts, rather than asserting at the first difference, so that a
fault scenario can report how much was lost or doubled (RELIABILITY.md) and
then fail with every difference listed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgspec

from wire.synthetic import Expected


@dataclass
class Audit:
    expected_results: int
    expected_dead_letters: int
    results: int = 0
    dead_letters: int = 0
    # Job keys ("tenant/job") with no result.
    lost: list[str] = field(default_factory=list)
    # Job keys with more than one result, once per extra result; records whose
    # id was written twice.
    duplicated: list[str] = field(default_factory=list)
    # Results that exist but say the wrong thing (status, counts, payloads),
    # or results for jobs the workload never had.
    wrong: list[str] = field(default_factory=list)
    # Dead letters missing (negative) or extra (positive), and any without reason.
    dead_letter_difference: int = 0
    dead_letters_without_reason: int = 0
    # Jobs the tenant summaries count as completed, against the jobs expected.
    summarized_jobs: int = 0

    @property
    def expected_records(self) -> int:
        return self.expected_results + self.expected_dead_letters

    @property
    def lost_records(self) -> int:
        return len(self.lost) + max(0, -self.dead_letter_difference)

    @property
    def duplicated_records(self) -> int:
        return len(self.duplicated) + max(0, self.dead_letter_difference)

    @property
    def clean(self) -> bool:
        return (
            not self.lost
            and not self.duplicated
            and not self.wrong
            and self.dead_letter_difference == 0
            and self.dead_letters_without_reason == 0
            and self.summarized_jobs == self.expected_results
        )

    def problems(self) -> str:
        return (
            f"lost {self.lost[:10]} ({len(self.lost)}), "
            f"duplicated {self.duplicated[:10]} ({len(self.duplicated)}), "
            f"wrong {self.wrong[:10]} ({len(self.wrong)}), "
            f"dead letters {self.dead_letters} vs {self.expected_dead_letters} "
            f"expected, {self.dead_letters_without_reason} without a reason, "
            f"summaries count {self.summarized_jobs} jobs of "
            f"{self.expected_results}"
        )


def audit(records: list[dict], expected: Expected) -> Audit:
    """Check ``records`` (every record of every kind in the sink) against the
    workload's ``expected`` outcome: one complete result per job with exactly
    the job's events and payloads, one dead letter (with a reason) per
    invalid input, and tenant summaries that count every job once."""
    report = Audit(
        expected_results=len(expected.payloads),
        expected_dead_letters=expected.dead_letters,
    )
    ids = Counter(
        r.get("result_id") or r.get("dead_letter_id") or r.get("summary_id")
        for r in records
    )
    report.duplicated += [f"record id {i}" for i, n in ids.items() if n > 1]
    results = [r for r in records if r["type"] == "job.result"]
    report.results = len(results)
    per_job = Counter(f"{r['tenant_id']}/{r['job_id']}" for r in results)
    report.lost = sorted(set(expected.payloads) - set(per_job))
    for key, n in sorted(per_job.items()):
        report.duplicated += [key] * (n - 1)
    for result in results:
        key = f"{result['tenant_id']}/{result['job_id']}"
        if key not in expected.payloads:
            report.wrong.append(f"{key}: not in the workload")
        elif (why := _wrong(result, expected, key)) is not None:
            report.wrong.append(f"{key}: {why}")
    dead = [r for r in records if r["type"] == "dead_letter"]
    report.dead_letters = len(dead)
    report.dead_letter_difference = len(dead) - expected.dead_letters
    report.dead_letters_without_reason = sum(1 for d in dead if not d["reason"])
    report.summarized_jobs = sum(
        r["jobs_completed"] for r in records if r["type"] == "tenant.summary"
    )
    return report


def _wrong(result: dict, expected: Expected, key: str) -> str | None:
    if result["status"] != "complete" or result["missing"]:
        return f"status {result['status']}, missing {result['missing']}"
    if result["events"] != expected.events(key):
        return f"{result['events']} events, {expected.events(key)} expected"
    want = expected.payloads[key]
    if list(result["analyses"]) != list(want):
        return f"analyses {list(result['analyses'])}, {list(want)} expected"
    for analysis_type, payloads in want.items():
        got = result["analyses"][analysis_type]
        if got["payloads"] != [msgspec.json.decode(p) for p in payloads]:
            return f"payloads of {analysis_type} differ"
    return None
