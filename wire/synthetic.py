"""A synthetic workload: deterministic from a seed, realistic enough to test.

Jobs across tenants, each with a ``job.opened`` and ``parts`` results for each
of its analysis types; payloads look like real analysis output (labels,
scores, boxes, text). On request it mixes in redeliveries, results that
arrive before their ``job.opened``, and invalid events of every kind the
contract names, and it says what the sink should hold afterwards.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from wire.events import ID_MAX_LENGTH

ANALYSIS_TYPES = ("detect", "classify", "caption", "segment", "ocr", "embed")
LABELS = ("person", "car", "bicycle", "dog", "cat", "truck", "sign", "tree")
WORDS = (
    *("a", "quiet", "street", "with", "parked", "cars", "and", "a", "cyclist"),
    *("waiting", "at", "the", "light", "two", "dogs", "play", "near", "a"),
    *("bench", "while", "people", "walk", "past", "under", "the", "trees"),
)
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)

_json = msgspec.json.Encoder()


@dataclass(frozen=True, kw_only=True)
class WorkloadSpec:
    tenants: int = 5
    jobs: int = 50
    types: int = 3
    parts: int = 2
    duplicates: float = 0.0  # fraction of events delivered twice
    early: float = 0.0  # fraction of jobs whose results come before job.opened
    invalid: float = 0.0  # fraction of extra invalid events (per valid event)
    open_jobs: int = 100  # jobs whose events interleave at any moment
    payload_bytes: int = 400
    seed: int = 1
    # Prepended to job ids, so that separate runs never share a job.
    run: str = ""
    # Share of all jobs that belong to tenant-000 (the rest round-robin).
    hot_share: float = 0.0
    # Every Nth job (0: none; jobs N-1, 2N-1, ...) has one detection whose
    # score is out of range (1.25) in its first ``detect`` part: the example
    # model's range test (``actors.models:detections``) dead-letters that row.
    faulty_every: int = 25
    # When set, each job draws its number of types from [types_min, types]
    # and each type its number of parts from [parts_min, parts].
    types_min: int | None = None
    parts_min: int | None = None
    # Tenant ids to use instead of tenant-000.. (hot_share still picks the first).
    tenant_ids: tuple[str, ...] = ()


@dataclass
class Expected:
    """What a correct run leaves in the sink."""

    # job key "{tenant}/{job}" -> analysis type -> payload JSON bytes per part
    payloads: dict[str, dict[str, list[bytes]]] = field(default_factory=dict)
    dead_letters: int = 0
    # Job keys whose ``detect`` part 0 holds one detection (index 0) with a
    # score out of range: one dead letter each under the detections model.
    faulty: list[str] = field(default_factory=list)

    def events(self, key: str) -> int:
        return 1 + sum(len(p) for p in self.payloads[key].values())


FAULTY_SCORE = 1.25

# The contract's acceptance workload: 5,000 jobs across 50 tenants, 3 types x
# 2 parts, 5% redeliveries, 30% of jobs with results before job.opened, 1%
# invalid events (the end-to-end tests and ``script.bench --sinks``).
ACCEPTANCE = WorkloadSpec(
    tenants=50,
    jobs=5000,
    types=3,
    parts=2,
    duplicates=0.05,
    early=0.3,
    invalid=0.01,
    seed=7,
)

# Tenant ids as real deployments have them: unicode, and up to the 128
# characters an id may have.
REALISTIC_TENANTS = (
    "acme",
    "Zürich-Forschung",
    "東京-解析チーム",
    "équipe-vision-ÉTÉ-2026",
    "north-" + "x" * 122,
    "研究所-" + "長" * 124,
    "Ωmega-" + "ß" * 122,
)

# Traffic shaped like real analysis services': 1-4 analysis types of 1-5
# parts each (about 8.5 events a job, 9 with the 6% redelivered), seven
# tenants with unicode and 128-character ids, some results before their
# job.opened, a few invalid events.
REALISTIC = WorkloadSpec(
    tenants=len(REALISTIC_TENANTS),
    tenant_ids=REALISTIC_TENANTS,
    jobs=3000,
    types=4,
    types_min=1,
    parts=5,
    parts_min=1,
    duplicates=0.06,
    early=0.1,
    invalid=0.005,
    open_jobs=100,
    seed=13,
)


def event_id(*parts: str | int) -> str:
    """An event id made of ``parts`` joined by ':'; past the 128 characters
    an id may have (long tenant and job ids), the first part (the tenant)
    becomes a short digest of itself. Ids need only be unique per job."""
    joined = ":".join(map(str, parts))
    if len(joined) <= ID_MAX_LENGTH:
        return joined
    digest = hashlib.blake2b(str(parts[0]).encode(), digest_size=6).hexdigest()
    return ":".join(map(str, (digest, *parts[1:])))[:ID_MAX_LENGTH]


def result_line(
    tenant: str,
    job: str,
    analysis_type: str,
    part: int,
    parts: int,
    body: bytes,
    at: str,
) -> bytes:
    """One ``analysis.result`` event line, its payload ``body`` spliced in as
    it is (already JSON), its event id derived from the job and the part."""
    return (
        b'{"type":"analysis.result","event_id":"%s","tenant_id":"%s",'
        b'"job_id":"%s","analysis_type":"%s","part":%d,"parts":%d,'
        b'"payload":%s,"at":"%s"}'
        % (
            event_id(tenant, job, analysis_type, part).encode(),
            tenant.encode(),
            job.encode(),
            analysis_type.encode(),
            part,
            parts,
            body,
            at.encode(),
        )
    )


def payload(
    rng: random.Random, analysis_type: str, size: int, *, faulty: bool = False
) -> bytes:
    """An analysis payload of roughly ``size`` bytes of JSON.

    ``faulty`` sets the first detection's score to ``FAULTY_SCORE`` (out of
    the range ``[0, 1]``), drawing the same random numbers as without it.
    """
    body: dict[str, object] = {"model": f"{analysis_type}-v{rng.randint(1, 4)}"}
    detections = []
    while len(_json.encode(body)) + 120 < size:
        detections.append(
            {
                "label": rng.choice(LABELS),
                "score": round(rng.random(), 4),
                "box": [rng.randint(0, 1920), rng.randint(0, 1080), 64, 48],
            }
        )
        body["detections"] = detections
    if faulty and detections:
        detections[0]["score"] = FAULTY_SCORE
    body["text"] = " ".join(rng.choice(WORDS) for _ in range(8))
    return _json.encode(body)


def _invalid(rng: random.Random, tenant: str, job: str, n: int, parts: int) -> bytes:
    """One invalid event, of a kind picked from the contract's list.

    Kinds 0-6 are refused at the edge; kind 7 is well-formed and refused by
    the job (a type it does not require), whether it arrives before or after
    the job's ``job.opened``. Refusals that depend on arrival order (a second
    event for a filled part, a disagreeing part count) are not generated
    here: an emitter with several batches in flight may deliver them ahead of
    the valid event they contradict, which makes the valid one the refused
    one. The fault scenarios send those in a phase of their own.
    """
    at = BASE_TIME.isoformat()
    base = {
        "type": "analysis.result",
        "event_id": event_id(f"bad-{tenant}-{job}-{n}"),
        "tenant_id": tenant,
        "job_id": job,
        "analysis_type": ANALYSIS_TYPES[0],
        "part": 0,
        "parts": parts,
        "payload": {"x": 1},
        "at": at,
    }
    kind = rng.randrange(8)
    if kind == 7:
        base["analysis_type"] = "unrequested"
        return _json.encode(base)
    if kind == 0:
        # not JSON (cut short)
        return (
            b'{"type": "analysis.result", "event_id": "%s", '
            % base["event_id"].encode()
        )
    if kind == 1:
        del base["payload"]
    elif kind == 2:
        base["part"] = "zero"
    elif kind == 3:
        base["tenant_id"] = f"{tenant}/../other"
    elif kind == 4:
        base["part"] = parts + 5
    elif kind == 5:
        base["type"] = "analysis.retracted"
    else:  # kind 6
        base["job_id"] = ""
    return _json.encode(base)


def generate(spec: WorkloadSpec) -> tuple[list[bytes], Expected]:
    """All lines of the workload, in delivery order, and what they should yield."""
    rng = random.Random(spec.seed)
    expected = Expected()
    streams: list[list[bytes]] = []
    tenants = spec.tenant_ids or tuple(f"tenant-{t:03d}" for t in range(spec.tenants))
    for j in range(spec.jobs):
        if spec.hot_share and rng.random() < spec.hot_share:
            tenant = tenants[0]
        else:
            tenant = tenants[j % len(tenants)]
        job = f"job-{spec.run}{j:06d}"
        key = f"{tenant}/{job}"
        kinds = spec.types
        if spec.types_min is not None:
            kinds = rng.randint(spec.types_min, spec.types)
        types = list(ANALYSIS_TYPES[:kinds])
        at = BASE_TIME + timedelta(seconds=j)
        opened = _json.encode(
            {
                "type": "job.opened",
                "event_id": event_id(tenant, job, "opened"),
                "tenant_id": tenant,
                "job_id": job,
                "required": types,
                "at": at.isoformat(),
            }
        )
        results = []
        expected.payloads[key] = {}
        every = spec.faulty_every
        faulty_job = bool(every) and j % every == every - 1
        for analysis_type in types:
            parts = []
            count = spec.parts
            if spec.parts_min is not None:
                count = rng.randint(spec.parts_min, spec.parts)
            for part in range(count):
                faulty = faulty_job and analysis_type == "detect" and part == 0
                body = payload(rng, analysis_type, spec.payload_bytes, faulty=faulty)
                if faulty and b'"detections"' in body:
                    expected.faulty.append(key)
                parts.append(body)
                results.append(
                    result_line(
                        tenant,
                        job,
                        analysis_type,
                        part,
                        count,
                        body,
                        at.isoformat(),
                    )
                )
            expected.payloads[key][analysis_type] = parts
        rng.shuffle(results)
        stream = [*results, opened] if rng.random() < spec.early else [opened, *results]
        # Redeliveries come after the original, anywhere later in the stream.
        for event in list(stream):
            if rng.random() < spec.duplicates:
                stream.insert(rng.randint(stream.index(event) + 1, len(stream)), event)
        # Invalid events go last, so none of them can take a valid event's slot.
        extra = sum(rng.random() < spec.invalid for _ in range(len(results) + 1))
        for n in range(extra):
            bad = _invalid(rng, tenant, job, n, spec.parts)
            stream.append(bad)
            if rng.random() < spec.duplicates:
                stream.append(bad)  # redelivered: still one dead letter
        expected.dead_letters += extra
        streams.append(stream)
    return list(_interleave(streams, spec.open_jobs, rng)), expected


def _interleave(
    streams: list[list[bytes]], open_jobs: int, rng: random.Random
) -> Iterator[bytes]:
    """Merge job streams, about ``open_jobs`` at a time, keeping each in order."""
    for start in range(0, len(streams), open_jobs):
        group = [list(reversed(s)) for s in streams[start : start + open_jobs]]
        while group:
            i = rng.randrange(len(group))
            yield group[i].pop()
            if not group[i]:
                group[i] = group[-1]
                group.pop()
