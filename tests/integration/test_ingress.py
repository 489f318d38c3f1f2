"""The HTTP ingress as operators run it: a real ``python -m script.ingress``
process in front of a real dev server and worker, driven over real HTTP."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from tests.support.events import push_envelope as push
from tests.support.polling import wait_until
from tests.support.records import file_progress, file_records
from tests.support.temporal import address_of
from wire.synthetic import WorkloadSpec, generate

AT = "2026-01-01T00:00:00Z"


def opened(job: str, *, required: tuple[str, ...] = ("detect",)) -> dict[str, Any]:
    return {
        "type": "job.opened",
        "event_id": f"{job}-opened",
        "tenant_id": "acme",
        "job_id": job,
        "required": list(required),
        "at": AT,
    }


def result(job: str, part: int, parts: int = 2, **fields: Any) -> dict[str, Any]:
    return {
        "type": "analysis.result",
        "event_id": f"{job}-detect-{part}",
        "tenant_id": "acme",
        "job_id": job,
        "analysis_type": "detect",
        "part": part,
        "parts": parts,
        "payload": {"boxes": [[1, 2, 3, 4]], "score": 0.5},
        "at": AT,
        **fields,
    }


def event_bytes(event: dict[str, Any]) -> bytes:
    return msgspec.json.encode(event)


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, **kwargs: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with session.post(url, data=body, **kwargs) as response:
        text = await response.read()
        payload = msgspec.json.decode(text) if text else {}
        return response.status, payload, dict(response.headers)


def results_by_job(out: Path) -> Counter[str]:
    return Counter(r["job_id"] for r in file_records(out) if r["type"] == "job.result")


async def test_pubsub_deliveries_valid_duplicate_and_malformed(
    temporal, worker_process, ingress_process, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    address = address_of(temporal)
    worker_process(address, ["--shards", "4", "--sink", f"file:{out}"])
    ingress = ingress_process(address, ["--shards", "4", "--max-payload-bytes", "1024"])
    url = ingress.url + "/pubsub/push"

    # The event id comes from the message id; the tenant from the attributes.
    first = result("j1", 0)
    del first["event_id"], first["tenant_id"]
    valid = [
        push(event_bytes(opened("j1")), "m-open"),
        push(event_bytes(first), "m-part0", {"tenant_id": "acme"}),
        push(event_bytes(result("j1", 1)), "m-part1", {"tenant_id": "not-acme"}),
    ]
    oversize = result("j2", 0, payload={"blob": "x" * 4096})
    malformed = {
        "base64": push("%%% not base64 %%%", "m-bad-b64"),
        "json": push(b'{"type": "analysis.result", "event_id": ', "m-bad-json"),
        "missing": push(event_bytes({"type": "job.opened", "job_id": "j3"}), "m-miss"),
        "oversize": push(event_bytes(oversize), "m-big"),
        "envelope": b'{"not": "a push envelope"}',
    }
    async with aiohttp.ClientSession() as session:
        for body in valid:
            status, payload, _ = await post(session, url, body)
            assert (status, payload) == (200, {"outcome": "accepted"})
        # A redelivery (same message) and a second, concurrent copy.
        again = await asyncio.gather(*(post(session, url, valid[2]) for _ in range(2)))
        assert [status for status, _, _ in again] == [200, 200]
        reasons = {}
        for name, body in malformed.items():
            status, payload, _ = await post(session, url, body)
            assert status == 200, name
            assert payload["outcome"] == "dead_lettered"
            reasons[name] = payload["reason"]

    assert "base64" in reasons["base64"]
    assert "not valid JSON" in reasons["json"]
    assert "missing required field" in reasons["missing"]
    assert "over the limit" in reasons["oversize"]
    assert "not a Pub/Sub push envelope" in reasons["envelope"]

    await wait_until(
        lambda: file_progress(out),
        lambda p: p.results >= 1 and p.dead_letters >= len(malformed),
        limit_s=60,
    )
    records = file_records(out)
    [job] = [r for r in records if r["type"] == "job.result"]
    assert (job["job_id"], job["status"], job["events"]) == ("j1", "complete", 3)
    assert (
        job["analyses"]["detect"]["payloads"]
        == [{"boxes": [[1, 2, 3, 4]], "score": 0.5}] * 2
    )
    dead = [r for r in records if r["type"] == "dead_letter"]
    assert sorted(d["reason"] for d in dead) == sorted(reasons.values())
    by_reason = {d["reason"]: d for d in dead}
    assert by_reason[reasons["base64"]]["event_id"] == "m-bad-b64"
    assert by_reason[reasons["oversize"]]["job_id"] == "j2"

    log = ingress.log_records()
    access = [r for r in log if r.get("event") == "request"]
    assert len(access) == len(valid) + 2 + len(malformed)
    assert all(r["request_id"] and r["duration_ms"] >= 0 for r in access)
    assert Counter(r["outcome"] for r in access) == {
        "accepted": len(valid) + 2,
        "dead_lettered": len(malformed),
    }
    conflicts = [r for r in log if "conflict" in r.get("event", "")]
    assert [c["fields"] for c in conflicts] == [["tenant_id"]] * 3
    text = ingress.log.read_text()
    assert "boxes" not in text, "no event contents in the logs at info level"
    assert "not-acme" not in text


async def test_events_endpoint_accepts_arrays_and_lines_and_refuses_with_400(
    temporal, worker_process, ingress_process, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    address = address_of(temporal)
    worker_process(address, ["--shards", "4", "--sink", f"file:{out}"])
    ingress = ingress_process(address, ["--max-body-bytes", "65536"])
    url = ingress.url + "/events"
    async with aiohttp.ClientSession() as session:
        one = await post(session, url, event_bytes(opened("a1")))
        assert one[:2] == (200, {"accepted": 1, "rejected": 0})
        array = b"[" + b",".join(event_bytes(result("a1", n)) for n in (0, 1)) + b"]"
        assert (await post(session, url, array))[0] == 200
        lines = b"\n".join(
            event_bytes(e) for e in (opened("b1"), result("b1", 0), result("b1", 1))
        )
        status, payload, _ = await post(
            session, url, lines, headers={"Content-Type": "application/x-ndjson"}
        )
        assert (status, payload) == (200, {"accepted": 3, "rejected": 0})
        # A duplicate is acknowledged like any accepted event.
        assert (await post(session, url, event_bytes(result("b1", 1))))[0] == 200

        mixed = b"\n".join(
            [
                event_bytes(opened("c1")),
                b'{"type": "analysis.result", "event_id": ',
                event_bytes({"type": "job.opened", "job_id": "c2"}),
                event_bytes(result("c1", 0, payload={"blob": "x" * 300_000})),
            ]
        )
        status, payload, _ = await post(session, url, mixed)
        assert status == 413, "the body is over the 64 KiB limit"
        mixed = mixed.replace(b"x" * 300_000, b"x")
        mixed += b"\n" + event_bytes(result("c1", 5))
        status, payload, _ = await post(session, url, mixed)
        assert status == 400
        assert payload["accepted"] == 2
        assert [e["index"] for e in payload["errors"]] == [1, 2, 4]
        reasons = [e["reason"] for e in payload["errors"]]
        assert "not valid JSON" in reasons[0]
        assert "missing required field" in reasons[1]
        assert "outside" in reasons[2]
        status, payload, _ = await post(session, url, b"[{]")
        assert status == 400
        assert "not a valid JSON array" in payload["errors"][0]["reason"]
        assert (await post(session, url, b"\n"))[0] == 400  # nothing to take

    await wait_until(
        lambda: file_progress(out),
        lambda p: p.results >= 2 and p.dead_letters >= 4,
        limit_s=60,
    )
    assert results_by_job(out) == {"a1": 1, "b1": 1}
    dead = [r for r in file_records(out) if r["type"] == "dead_letter"]
    assert len(dead) == 4
    assert {d["source"] for d in dead} == {"edge"}


async def test_token_probes_and_limits(
    temporal, worker_process, ingress_process, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    address = address_of(temporal)
    worker_process(address, ["--shards", "4", "--sink", f"file:{out}"])
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    ingress = ingress_process(
        address, ["--token-file", str(token_file), "--max-body-bytes", "4096"]
    )
    url = ingress.url + "/pubsub/push"
    body = push(event_bytes(opened("t1", required=("detect",))), "m1")
    async with aiohttp.ClientSession() as session:
        assert (await post(session, url, body))[0] == 401
        status, _, _ = await post(
            session, url, body, headers={"Authorization": "Bearer wrong"}
        )
        assert status == 403
        assert (await post(session, url + "?token=wrong", body))[0] == 403
        assert (await post(session, url + "?token=s3cret-token", body))[0] == 200
        status, _, _ = await post(
            session,
            ingress.url + "/events",
            event_bytes(result("t1", 0, parts=1)),
            headers={"Authorization": "Bearer s3cret-token"},
        )
        assert status == 200
        too_big = push(b"x" * 8192, "m2")
        status, _, _ = await post(session, url + "?token=s3cret-token", too_big)
        assert status == 413
        async with session.get(ingress.url + "/healthz") as response:
            assert response.status == 200
        async with session.get(ingress.url + "/readyz") as response:
            assert response.status == 200, await response.text()
        async with session.get(ingress.url + "/pubsub/push") as response:
            assert response.status == 405

    await wait_until(lambda: file_progress(out), lambda p: p.results >= 1, limit_s=60)
    assert results_by_job(out) == {"t1": 1}
    text = ingress.log.read_text()
    assert "s3cret-token" not in text, "the token never reaches the logs"
    outcomes = Counter(
        r["outcome"] for r in ingress.log_records() if r.get("event") == "request"
    )
    assert outcomes["unauthorized"] == 1
    assert outcomes["forbidden"] == 2
    assert outcomes["too_large"] == 1
    assert outcomes["refused"] == 1  # GET on a POST route


async def test_without_temporal_deliveries_get_503_and_readyz_fails(
    ingress_process, unused_address: str
) -> None:
    # Nothing listens there: Temporal is unreachable.
    ingress = ingress_process(
        unused_address, ["--ack-timeout", "1", "--retry-after", "3"]
    )
    body = push(event_bytes(opened("u1")), "m1")
    async with aiohttp.ClientSession() as session:
        status, _, headers = await post(session, ingress.url + "/pubsub/push", body)
        assert status == 503
        assert headers["Retry-After"] == "3"
        async with session.get(ingress.url + "/healthz") as response:
            assert response.status == 200
        async with session.get(ingress.url + "/readyz") as response:
            assert response.status == 503
            assert "temporal unreachable" in (await response.json())["problems"][0]


async def test_sigterm_during_a_burst_loses_nothing_acknowledged(
    temporal, worker_process, ingress_process, tmp_path: Path
) -> None:
    """Requests caught by SIGTERM are still answered once their batches are
    flushed; whatever got no 2xx is delivered again (as Pub/Sub would) to a
    new ingress, and every job ends complete with all its events."""
    out = tmp_path / "out"
    address = address_of(temporal)
    worker_process(address, ["--shards", "4", "--sink", f"file:{out}"])
    # A long window keeps many requests waiting in batches when SIGTERM comes.
    ingress = ingress_process(address, ["--batch-window-ms", "300"])
    spec = WorkloadSpec(tenants=3, jobs=60, types=2, parts=2, seed=11, run="sig-")
    lines, expected = generate(spec)
    bodies = [push(line, f"m{n}") for n, line in enumerate(lines)]
    acknowledged: set[int] = set()
    after_signal: list[int] = []
    signalled_at: float | None = None

    async def send(session: aiohttp.ClientSession, n: int, url: str) -> None:
        try:
            status, _, _ = await post(session, url + "/pubsub/push", bodies[n])
        except aiohttp.ClientError:
            return  # the connection was closed: no answer, so not acknowledged
        if status == 200:
            acknowledged.add(n)
            if signalled_at is not None:
                after_signal.append(n)

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=32)
    ) as session:
        burst = [
            asyncio.create_task(send(session, n, ingress.url))
            for n in range(len(bodies))
        ]
        deadline = time.monotonic() + 60
        while len(acknowledged) < len(bodies) // 4:
            assert time.monotonic() < deadline, "the burst is not being acknowledged"
            await asyncio.sleep(0.01)
        signalled_at = time.monotonic()
        ingress.send_signal(signal.SIGTERM)
        await asyncio.gather(*burst)
    assert await asyncio.to_thread(ingress.wait, 60) == 0
    assert "ingress stopped" in ingress.log.read_text()
    assert after_signal, "requests in flight at SIGTERM were answered"

    # Pub/Sub redelivers everything that got no 2xx to the next instance.
    retry = ingress_process(address)
    missing = [n for n in range(len(bodies)) if n not in acknowledged]
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(send(session, n, retry.url) for n in missing))
    assert len(acknowledged) == len(bodies)

    await wait_until(
        lambda: file_progress(out), lambda p: p.results >= spec.jobs, limit_s=120
    )
    results = [r for r in file_records(out) if r["type"] == "job.result"]
    per_job = Counter(f"{r['tenant_id']}/{r['job_id']}" for r in results)
    assert len(per_job) == spec.jobs
    assert set(per_job.values()) == {1}
    for record in results:
        key = f"{record['tenant_id']}/{record['job_id']}"
        assert record["status"] == "complete"
        assert record["events"] == expected.events(key)
