"""Event builders: small hand-written events for scenarios and tests, and
the Pub/Sub push envelope that carries one."""

from __future__ import annotations

import base64

import msgspec


def event(kind: str, **fields: object) -> bytes:
    base = {"type": kind, "at": "2026-01-01T00:00:00Z"}
    return msgspec.json.encode({**base, **fields})


def opened(tenant: str, job: str, required: list[str], **extra: object) -> bytes:
    return event(
        "job.opened",
        event_id=f"{job}-open",
        tenant_id=tenant,
        job_id=job,
        required=required,
        **extra,
    )


def part(tenant: str, job: str, kind: str, n: int, parts: int, eid: str = "") -> bytes:
    return event(
        "analysis.result",
        event_id=eid or f"{job}-{kind}-{n}",
        tenant_id=tenant,
        job_id=job,
        analysis_type=kind,
        part=n,
        parts=parts,
        payload={"label": f"{kind}-{n}", "score": 0.5 + n / 10},
    )


def push_envelope(
    data: bytes | str,
    message_id: str,
    attributes: dict[str, str] | None = None,
    *,
    subscription: str = "projects/test/subscriptions/ingress",
) -> bytes:
    """A Pub/Sub push delivery of ``data`` (base64-encoded here; a str goes
    in as it is, for data that is not base64)."""
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
    return msgspec.json.encode(
        {
            "message": {
                "data": encoded,
                "attributes": attributes or {},
                "messageId": message_id,
                "publishTime": "2026-01-01T00:00:00Z",
            },
            "subscription": subscription,
        }
    )
