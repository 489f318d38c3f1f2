"""The soak's audit tells lost events from events dead-lettered as too late."""

from __future__ import annotations

from pathlib import Path

import msgspec

from actors.activities import TOO_LATE
from bench.soak import audit
from wire.trickle import TrickleJob

_json = msgspec.json.Encoder()


def _job(key: str, events: int) -> TrickleJob:
    return TrickleJob(
        key=key, start_s=0.0, window_s=20.0, events=events, completes_at_s=20.0
    )


def _result(tenant: str, job: str, version: int, events: int) -> dict[str, object]:
    return {
        "result_id": f"{tenant}/{job}/{version}",
        "tenant_id": tenant,
        "job_id": job,
        "version": version,
        "events": events,
        "status": "complete" if version == 1 else "amended",
    }


def _dead_letter(tenant: str, job: str, event: str, reason: str) -> dict[str, object]:
    return {
        "type": "dead_letter",
        "dead_letter_id": f"{tenant}/{job}/{event}",
        "reason": reason,
        "source": "job",
        "raw": "{}",
        "event_id": event,
        "tenant_id": tenant,
        "job_id": job,
        "at": "2026-01-01T00:00:00Z",
    }


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_bytes(b"".join(_json.encode(r) + b"\n" for r in rows))


def test_a_job_short_of_events_is_lost_unless_they_were_dead_lettered_late(
    tmp_path: Path,
) -> None:
    results = tmp_path / "job.result.jsonl"
    _write(
        results,
        [
            _result("t", "whole", 1, 5),
            _result("t", "late", 1, 4),
            _result("t", "short", 1, 3),
            _result("t", "bad", 1, 4),
        ],
    )
    _write(
        tmp_path / "dead_letter.jsonl",
        [
            _dead_letter("t", "late", "e5", TOO_LATE),
            _dead_letter("t", "late", "e5", TOO_LATE),  # written twice: one event
            _dead_letter("t", "bad", "e5", "not a valid event"),
        ],
    )
    jobs = [_job("t/whole", 5), _job("t/late", 5), _job("t/short", 5)]
    jobs.append(_job("t/bad", 5))
    checked = audit(results, jobs)
    assert checked["lost_jobs"] == 2  # short, and bad: its dead letter is not late
    assert checked["late_jobs"] == 1
    assert checked["late_examples"] == ["t/late"]
    assert checked["events_dead_lettered_late"] == 1
    assert checked["events_covered"] == 5 + 4 + 3 + 4
    assert checked["doubled_results"] == 0


def test_without_dead_letters_every_short_job_is_lost(tmp_path: Path) -> None:
    results = tmp_path / "job.result.jsonl"
    _write(results, [_result("t", "a", 1, 2), _result("t", "a", 1, 2)])
    checked = audit(results, [_job("t/a", 3)])
    assert checked["lost_jobs"] == 1
    assert checked["late_jobs"] == 0
    assert checked["doubled_results"] == 2  # the version twice, the id twice
