"""One example of every value the workflows and activities carry as a
payload, built through the rules where a rule builds it: the codec server's
round-trip tests run over them.

``PAYLOAD_TYPES`` lists the modules whose msgspec Structs travel as
payloads; ``missing_examples()`` names any Struct there without an example,
so a new type cannot slip past the tests.
"""

from __future__ import annotations

import importlib
import inspect
from datetime import UTC, datetime
from typing import Any

import msgspec

from actors.contracts import (
    CatchUpInput,
    DeliverInput,
    DeliverResult,
    JobBatch,
    JobInput,
    JobOutcome,
    ProxyInput,
    PublishJobInput,
    PublishSummaryInput,
    ReportInput,
    SettingsRequest,
    TenantInput,
)
from actors.rules import job as job_rules
from actors.rules import proxy as proxy_rules
from actors.rules import tenant as tenant_rules
from wire.events import AnalysisResult, JobOpened
from wire.records import DeadLetter, JobResult, TenantSummary
from wire.validate import reject

NOW = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
LATER = datetime(2026, 1, 1, 12, 45, 7, 250000, tzinfo=UTC)
TENANT, JOB = "tenant-a", "job-1"
# A value to look for in a decoded payload: it is in every result's payload.
MARKER = "zebra-crossing"

PAYLOAD_TYPES = (
    "actors.contracts",
    "actors.rules.job",
    "actors.rules.proxy",
    "actors.rules.tenant",
    "wire.events",
    "wire.records",
    "wire.validate",
)

OPENED = JobOpened(
    event_id="evt-open",
    tenant_id=TENANT,
    job_id=JOB,
    required=["detect", "caption"],
    at=NOW,
    deadline_s=120.0,
)


def result(analysis_type: str, part: int, parts: int = 2, **changes: Any) -> Any:
    """An ``analysis.result``; its payload is compact JSON, as msgspec and
    most producers write it (the codec server writes payloads compactly)."""
    payload = {"label": MARKER, "score": 0.91, "box": [1, 2, 3, 4], "part": part}
    fields: dict[str, Any] = {
        "event_id": f"evt-{analysis_type}-{part}",
        "tenant_id": TENANT,
        "job_id": JOB,
        "analysis_type": analysis_type,
        "part": part,
        "parts": parts,
        "payload": msgspec.json.encode(payload),
        "at": NOW,
    }
    fields.update(changes)
    return AnalysisResult(**fields)


TEXT_REJECTION = reject(b'{"type": "analysis.result", "part": "0"}', "a test refusal")
BINARY_REJECTION = reject(b"\xff\xfe not utf-8", "not valid JSON")


def job_state() -> job_rules.JobState:
    """A job mid-way: opened, parts in (one before the open), a refusal."""
    state = job_rules.new_job(TENANT, JOB, NOW)
    job_rules.apply_batch(
        state,
        [
            result("detect", 1),
            OPENED,
            result("detect", 0),
            result("caption", 0),
            result("unrequested", 0),
        ],
    )
    return state


def publication() -> job_rules.Publication:
    state = job_state()
    found = job_rules.decide(state, LATER, job_rules.JobSettings())
    assert found is not None
    assert found.snapshot is not None
    return found


def proxy_state() -> proxy_rules.ProxyState:
    state = proxy_rules.ProxyState()
    proxy_rules.ingest(
        state,
        proxy_rules.IngestBatch(
            events=[OPENED, result("detect", 0), result("detect", 1, job_id="job-2")],
            rejections=[TEXT_REJECTION, BINARY_REJECTION],
        ),
        proxy_rules.ProxySettings(shard=2, shards=4),
        now=NOW,
    )
    proxy_rules.gather_rollups(state, {TENANT: [publication().rollup]})
    return state


def tenant_state() -> tenant_rules.TenantState:
    state = tenant_rules.TenantState(tenant_id=TENANT)
    tenant_rules.add(state, [publication().rollup], NOW, 60.0)
    return state


def examples() -> list[Any]:
    """Every payload value type, at least once (the workflows' inputs, results,
    updates, queries and activities, and what they hold)."""
    pub = publication()
    assert pub.snapshot is not None
    settings = job_rules.JobSettings(default_deadline_s=60, continue_as_new_after=500)
    state = job_state()
    slot = state.slots["detect"]
    delivery = proxy_rules.JobDelivery(
        tenant_id=TENANT, job_id=JOB, events=[OPENED, result("caption", 1)]
    )
    ack = job_rules.BatchAck(accepted=2, duplicates=1, rejected=1)
    summary = TenantSummary(
        summary_id=f"{TENANT}/2026-01-01T12:30:00+00:00",
        tenant_id=TENANT,
        window_start="2026-01-01T12:30:00+00:00",
        window_end="2026-01-01T12:31:00+00:00",
        jobs_completed=2,
        jobs_timed_out=0,
        jobs_amended=1,
        events=9,
        analyses={"detect": 4},
        dead_letters=1,
    )
    proxy_settings = proxy_rules.ProxySettings(shard=2, shards=4, max_pending=10)
    return [
        OPENED,
        result("detect", 0),
        TEXT_REJECTION,
        BINARY_REJECTION,
        proxy_rules.IngestBatch(
            events=[OPENED, result("detect", 0), result("caption", 1)],
            rejections=[TEXT_REJECTION, BINARY_REJECTION],
        ),
        proxy_rules.IngestBatch(),
        proxy_rules.IngestAck(accepted=3, duplicates=1, rejected=2),
        delivery,
        proxy_settings,
        proxy_state(),
        proxy_rules.view(
            proxy_state(),
            proxy_settings,
            deliveries_in_flight=1,
            events_in_flight=3,
            draining=False,
            retired=False,
        ),
        ProxyInput(settings=proxy_settings, state=proxy_state()),
        ProxyInput(settings=proxy_rules.ProxySettings(shard=0, shards=1)),
        settings,
        state,
        slot,
        state.refusals[0],
        ack,
        job_rules.Reply(delivery_id="run/1", ack=ack, publication=pub),
        job_rules.Reply(delivery_id="run/2", ack=job_rules.BatchAck()),
        pub.snapshot,
        pub.rollup,
        pub,
        job_rules.view(state, settings).parts["detect"],
        job_rules.view(state, settings),
        JobInput(tenant_id=TENANT, job_id=JOB, settings=settings, state=state),
        JobInput(tenant_id=TENANT, job_id=JOB),
        JobBatch(events=[OPENED, result("detect", 0)], delivery_id="run/1"),
        JobOutcome(version=2, status="amended", events=5),
        tenant_rules.TenantSettings(summary_interval_s=30),
        tenant_state().counts,
        tenant_state(),
        tenant_rules.RollupBatch(deltas=[pub.rollup]),
        TenantInput(tenant_id=TENANT, state=tenant_state()),
        DeliverInput(
            deliveries=[delivery],
            rejections=[TEXT_REJECTION],
            at=NOW,
            delivery_id="run/1",
        ),
        DeliverResult(ack=ack, too_late=1, rollups={TENANT: [pub.rollup]}),
        ReportInput(rollups={TENANT: [pub.rollup], "tenant-b": []}),
        PublishJobInput(tenant_id=TENANT, job_id=JOB, publication=pub, at=LATER),
        PublishSummaryInput(summary=summary),
        SettingsRequest(shard=1, shards=4),
        CatchUpInput(
            sink="postgresql://u:***@db:5432/results",
            records=msgspec.msgpack.encode(
                [{"kind": "job.result", "record_id": "r/1", "body": b'{"a":1}'}]
            ),
            count=1,
        ),
        JobResult(
            result_id=f"{TENANT}/{JOB}/1",
            tenant_id=TENANT,
            job_id=JOB,
            version=1,
            status="complete",
            events=5,
            analyses={"detect": {"parts": 1, "payloads": [{"label": MARKER}, None]}},
            required=["detect"],
            missing={},
            opened_at="2026-01-01T12:30:00+00:00",
            completed_at="2026-01-01T12:45:07+00:00",
        ),
        summary,
        DeadLetter(
            dead_letter_id="raw-1",
            reason="not valid JSON",
            source="edge",
            raw="/w==",
            raw_encoding="base64",
            at="2026-01-01T12:30:00+00:00",
        ),
    ]


def struct_types() -> set[type]:
    """The public msgspec Structs of ``PAYLOAD_TYPES``."""
    found = set()
    for name in PAYLOAD_TYPES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, msgspec.Struct)
                and value.__module__ == name
                and not attr.startswith("_")
            ):
                found.add(value)
    return found


def missing_examples() -> set[str]:
    """Names of the Structs that ``examples()`` has no value of."""
    covered = {type(value) for value in examples()}
    return {cls.__qualname__ for cls in struct_types() - covered}
