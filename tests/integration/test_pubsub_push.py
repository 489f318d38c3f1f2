"""The ingress behind a real Pub/Sub client: Google's emulator pushes a
generated workload to ``/pubsub/push`` of a real ``python -m script.ingress``,
in front of a real dev server and worker process with a file sink.

The worker starts only after the first deliveries have been answered 503
(nobody holds their events yet), so the emulator redelivers them, as Pub/Sub
does for anything but a 2xx. The sink must still hold exactly what the
workload says: one complete result per job, one dead letter per invalid
event, nothing twice.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import msgspec

from tests.support.audit import audit
from tests.support.faults import all_landed
from tests.support.polling import wait_until
from tests.support.records import Progress, file_progress, file_records
from tests.support.temporal import address_of
from wire import Rejection, parse_event
from wire.synthetic import WorkloadSpec, generate

TOPIC = "events"
SUBSCRIPTION = "ingress-push"
# Fields a message's attributes carry instead of its body, for some messages.
MOVED = ("tenant_id", "job_id", "analysis_type")
# 503s to see before the worker starts.
REFUSED_FIRST = 4

_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])


def as_message(line: bytes) -> tuple[bytes, dict[str, str]]:
    """The Pub/Sub message for one workload line.

    Every third valid event (chosen by its bytes, so that a redelivered copy
    goes the same way) has its tenant, job and analysis type in the message
    attributes instead of its body; the ingress fills them back in. Invalid
    events go as they are.
    """
    if isinstance(parse_event(line), Rejection) or zlib.crc32(line) % 3:
        return line, {}
    fields = _fields.decode(line)
    attributes = {
        name: msgspec.json.decode(fields.pop(name)) for name in MOVED if name in fields
    }
    return msgspec.json.encode(fields), attributes


async def test_emulator_push_with_redeliveries_yields_exactly_the_workload(
    temporal, pubsub_emulator, worker_process, ingress_process, tmp_path: Path
) -> None:
    spec = WorkloadSpec(
        tenants=3,
        jobs=40,
        types=2,
        parts=2,
        duplicates=0.1,
        early=0.3,
        invalid=0.05,
        seed=23,
        run="pubsub-",
    )
    lines, expected = generate(spec)
    messages = [as_message(line) for line in lines]
    assert sum(1 for _, attributes in messages if attributes) > len(lines) // 5
    assert expected.dead_letters > 0
    assert len(set(lines)) < len(lines), "the workload redelivers some events"

    out = tmp_path / "out"
    address = address_of(temporal)
    # A short acknowledgement timeout: with no worker yet, deliveries get 503
    # after a second.
    ingress = ingress_process(address, ["--shards", "4", "--ack-timeout", "1"])
    await pubsub_emulator.create_topic(TOPIC)
    await pubsub_emulator.create_push_subscription(
        SUBSCRIPTION, TOPIC, ingress.url + "/pubsub/push"
    )
    ids = await pubsub_emulator.publish(TOPIC, messages)
    assert len(set(ids)) == len(messages)

    def access() -> list[dict]:
        return [r for r in ingress.log_records() if r.get("event") == "request"]

    def answered(status: int) -> set[str]:
        return {r["message_id"] for r in access() if r["status"] == status}

    async def refusals() -> int:
        return sum(1 for r in access() if r["status"] == 503)

    seen = await wait_until(
        refusals, lambda n: n >= REFUSED_FIRST, limit_s=60, settle_s=0, interval_s=0.2
    )
    assert seen.progress >= REFUSED_FIRST, "no delivery was refused without a worker"
    worker_process(
        address, ["--shards", "4", "--sink", f"file:{out}", "--summary-interval", "1"]
    )

    async def state() -> tuple[Progress, set[str]]:
        return await file_progress(out), answered(200)

    sink_done = all_landed(expected)
    await wait_until(
        state,
        lambda s: sink_done(s[0]) and s[1] >= set(ids),
        limit_s=120,
        settle_s=3,
    )
    result = audit(file_records(out), expected)
    assert result.clean, result.problems()

    # Every message was delivered to the ingress and acknowledged; each one
    # refused first was delivered again until it was.
    requests = access()
    assert {r["path"] for r in requests} == {"/pubsub/push"}
    assert {r["status"] for r in requests} <= {200, 503}
    acknowledged = {r["message_id"] for r in requests if r["status"] == 200}
    refused = {r["message_id"] for r in requests if r["status"] == 503}
    assert acknowledged == set(ids)
    assert refused, "some deliveries were refused, and so redelivered"
    assert refused <= acknowledged
    # The ingress answered each message as its event deserves: invalid ones
    # dead-lettered at the edge, the rest accepted.
    want = {
        message_id: "dead_lettered"
        if isinstance(parse_event(line), Rejection)
        else "accepted"
        for message_id, line in zip(ids, lines, strict=True)
    }
    got = {r["message_id"]: r["outcome"] for r in requests if r["status"] == 200}
    assert got == want
