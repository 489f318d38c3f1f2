"""A trickle workload: the shape real analysis services make.

Jobs arrive as a Poisson stream at an offered rate of events per minute. Each
job sends its ``job.opened`` at once, then 1-4 analysis types x 1-5 parts
(8.5 events a job on average) spread over a window drawn in 20-30 s: the
window is cut into one slot per part and each part lands anywhere in its slot
(jitter), so parts come about 3 s apart and the last one near the window's
end. A small share of jobs (``straggler_share``) hold one part back: their
``job.opened`` carries a deadline ``grace_s`` after the window, the job
publishes a ``timed_out`` version then, and the held part arrives later,
within the workers' linger, which makes an ``amended`` version (version 2).
A straggler that would land after the run's duration is not generated, so
every straggler job closes its story inside the run.

Lines are encoded as ``wire.synthetic.generate`` encodes them (same ids, same
payloads), and the stream is deterministic from the seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import msgspec

from wire.synthetic import ANALYSIS_TYPES, BASE_TIME, event_id, payload, result_line

_json = msgspec.json.Encoder()


@dataclass(frozen=True, kw_only=True)
class TrickleSpec:
    """What to offer: a rate, for how long, and the shape of each job."""

    rate_per_min: float  # events per minute offered, stragglers included
    duration_s: float  # jobs arrive during [0, duration_s)
    tenants: int = 13
    types: tuple[int, int] = (1, 4)  # analysis types per job, inclusive
    parts: tuple[int, int] = (1, 5)  # parts per type, inclusive
    window_s: tuple[float, float] = (20.0, 30.0)  # a job's spread, drawn per job
    straggler_share: float = 0.02
    # The workers' ``--job-linger``: a straggler lands in the middle half of
    # the linger after its job's timed-out version, never after it closes.
    linger_s: float = 60.0
    # A straggler job's deadline, in seconds after its window ends.
    grace_s: float = 10.0
    payload_bytes: int = 400
    seed: int = 1
    run: str = ""  # prepended to job ids, so separate runs never share a job


@dataclass(frozen=True)
class TrickleJob:
    """One job of the trickle, for the driver's bookkeeping."""

    key: str  # "{tenant}/{job}"
    start_s: float  # when its job.opened is sent
    window_s: float
    events: int  # every event it sends, the straggler included
    # When the event that completes the on-time part of the job is sent: its
    # last part (a straggler job: its last part before the straggler).
    completes_at_s: float
    straggler_at_s: float | None = None  # when its held-back part is sent


@dataclass(frozen=True)
class TrickleEvent:
    send_at_s: float
    line: bytes
    key: str  # the job's "{tenant}/{job}"


def trickle(spec: TrickleSpec) -> Iterator[tuple[float, bytes]]:
    """``(send_at_seconds, event_line)`` pairs in time order."""
    _, events = build(spec)
    for event in events:
        yield event.send_at_s, event.line


def build(spec: TrickleSpec) -> tuple[list[TrickleJob], list[TrickleEvent]]:
    """The jobs in arrival order, and every job's events merged in send order
    (the sort is stable: a tie keeps job order, and a job's own order)."""
    rng = random.Random(spec.seed)
    jobs_per_s = spec.rate_per_min / 60 / mean_events(spec)
    jobs: list[TrickleJob] = []
    events: list[TrickleEvent] = []
    t = rng.expovariate(jobs_per_s)
    while t < spec.duration_s:
        job, lines = _job(spec, rng, len(jobs), t)
        jobs.append(job)
        events.extend(TrickleEvent(at, line, job.key) for at, line in lines)
        t += rng.expovariate(jobs_per_s)
    events.sort(key=lambda e: e.send_at_s)
    return jobs, events


def mean_events(spec: TrickleSpec) -> float:
    """Events a job sends on average (a straggler is one of its parts, not
    an extra event): the rate is offered in events, jobs arrive at it
    divided by this."""
    types = (spec.types[0] + spec.types[1]) / 2
    parts = (spec.parts[0] + spec.parts[1]) / 2
    return 1 + types * parts


def _job(
    spec: TrickleSpec, rng: random.Random, j: int, start: float
) -> tuple[TrickleJob, list[tuple[float, bytes]]]:
    tenant = f"tenant-{rng.randrange(spec.tenants):03d}"
    job = f"job-{spec.run}{j:06d}"
    key = f"{tenant}/{job}"
    types = rng.sample(ANALYSIS_TYPES, rng.randint(*spec.types))
    parts = {t: rng.randint(*spec.parts) for t in types}
    window = rng.uniform(*spec.window_s)
    pieces = [(t, p) for t in types for p in range(parts[t])]
    rng.shuffle(pieces)
    # One slot per part across the window, each part anywhere in its slot.
    slot = window / len(pieces)
    times = [start + slot * (n + rng.random()) for n in range(len(pieces))]
    completes_at = times[-1]
    straggler_at = None
    deadline_s = None
    if len(pieces) > 1 and rng.random() < spec.straggler_share:
        deadline_s = window + spec.grace_s
        straggler = start + deadline_s + spec.linger_s * rng.uniform(0.25, 0.75)
        if straggler < spec.duration_s:
            straggler_at = straggler
            times[-1] = straggler
            completes_at = times[-2]
        else:
            deadline_s = None
    at = (BASE_TIME + timedelta(seconds=start)).isoformat()
    opened: dict[str, object] = {
        "type": "job.opened",
        "event_id": event_id(tenant, job, "opened"),
        "tenant_id": tenant,
        "job_id": job,
        "required": types,
        "at": at,
    }
    if deadline_s is not None:
        opened["deadline_s"] = round(deadline_s, 3)
    events = [(start, _json.encode(opened))]
    for (analysis_type, part), send_at in zip(pieces, times, strict=True):
        body = payload(rng, analysis_type, spec.payload_bytes)
        sent = (BASE_TIME + timedelta(seconds=send_at)).isoformat()
        events.append(
            (
                send_at,
                result_line(
                    tenant, job, analysis_type, part, parts[analysis_type], body, sent
                ),
            )
        )
    info = TrickleJob(
        key=key,
        start_s=start,
        window_s=window,
        events=len(events),
        completes_at_s=completes_at,
        straggler_at_s=straggler_at,
    )
    return info, events
