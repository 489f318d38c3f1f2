"""The project's data converter: msgpack payloads, Zstandard-compressed."""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter

from actors.contracts import (
    DeliverInput,
    JobInput,
    ProxyInput,
    PublishJobInput,
    TenantInput,
)
from actors.rules import proxy as rules
from actors.rules.job import JobSettings, apply_batch, decide, new_job
from actors.rules.proxy import IngestBatch, JobDelivery, ProxySettings, ProxyState
from actors.rules.tenant import Counts, TenantSettings, TenantState
from wire import DATA_CONVERTER, ZstdPayloadCodec
from wire._converter import MSGPACK_ENCODING, ZSTD_ENCODING
from wire.events import AnalysisResult, JobOpened
from wire.synthetic import WorkloadSpec, generate
from wire.validate import Rejection, parse_event, reject

NOW = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
TENANT, JOB = "tenant-a", "job-1"

OPENED = JobOpened(
    event_id="evt-open",
    tenant_id=TENANT,
    job_id=JOB,
    required=["detect", "caption"],
    at=NOW,
    deadline_s=120.0,
)


def result(analysis_type: str, part: int, parts: int = 2, **changes: Any) -> Any:
    fields: dict[str, Any] = {
        "event_id": f"evt-{analysis_type}-{part}",
        "tenant_id": TENANT,
        "job_id": JOB,
        "analysis_type": analysis_type,
        "part": part,
        "parts": parts,
        "payload": b'{"label": "car", "score": 0.91, "box": [1, 2, 3, 4]}',
        "at": NOW,
    }
    fields.update(changes)
    return AnalysisResult(**fields)


REJECTION = reject(b'{"type": "analysis.result", "part": "0"}', "a test rejection")
EDGE_REJECTION = reject(b"\xff\xfe not utf-8", "not valid JSON")


def job_state_with_slots() -> Any:
    """A job mid-way: opened, some parts in (one held before the open), a refusal."""
    state = new_job(TENANT, JOB, NOW)
    apply_batch(
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


def publication() -> Any:
    state = job_state_with_slots()
    pub = decide(state, datetime(2026, 1, 2, tzinfo=UTC), JobSettings())
    assert pub is not None
    assert pub.snapshot is not None
    return pub


CONTRACT_VALUES = [
    pytest.param(
        ProxyInput(
            settings=ProxySettings(shard=2, shards=4, max_pending=10),
            state=ProxyState(
                outbox={
                    f"{TENANT}/{JOB}": [OPENED, result("detect", 0)],
                    f"{TENANT}/job-2": [result("detect", 1, job_id="job-2")],
                },
                pending=3,
                rejections=[REJECTION, EDGE_REJECTION],
                recent={"evt-open": None, "evt-detect-0": None},
                accepted=3,
                duplicates=1,
                rejected=2,
            ),
        ),
        id="ProxyInput",
    ),
    pytest.param(ProxyInput(settings=ProxySettings(shard=0, shards=1)), id="Proxy-new"),
    pytest.param(
        JobInput(
            tenant_id=TENANT,
            job_id=JOB,
            settings=JobSettings(default_deadline_s=60, continue_as_new_after=500),
            state=job_state_with_slots(),
        ),
        id="JobInput",
    ),
    pytest.param(JobInput(tenant_id=TENANT, job_id=JOB), id="JobInput-new"),
    pytest.param(
        DeliverInput(
            deliveries=[
                JobDelivery(
                    tenant_id=TENANT,
                    job_id=JOB,
                    events=[OPENED, result("detect", 0), result("caption", 1)],
                )
            ],
            rejections=[REJECTION],
            at=NOW,
            delivery_id="run/1",
        ),
        id="DeliverInput",
    ),
    pytest.param(
        PublishJobInput(
            tenant_id=TENANT, job_id=JOB, publication=publication(), at=NOW
        ),
        id="PublishJobInput",
    ),
    pytest.param(
        TenantInput(
            tenant_id=TENANT,
            settings=TenantSettings(summary_interval_s=30),
            state=TenantState(
                tenant_id=TENANT,
                window_start=NOW,
                counts=Counts(
                    jobs_completed=2, events=9, analyses={"detect": 4}, dead_letters=1
                ),
                recent={f"{TENANT}/{JOB}#1": None},
                summaries=3,
            ),
        ),
        id="TenantInput",
    ),
    pytest.param(
        IngestBatch(
            events=[OPENED, result("detect", 0), result("caption", 1)],
            rejections=[REJECTION, EDGE_REJECTION],
        ),
        id="IngestBatch",
    ),
    pytest.param(IngestBatch(), id="IngestBatch-empty"),
]


@pytest.mark.parametrize("value", CONTRACT_VALUES)
async def test_data_converter_round_trips_contract_struct(value: Any) -> None:
    payloads = await DATA_CONVERTER.encode([value])
    [decoded] = await DATA_CONVERTER.decode(payloads, [type(value)])
    assert type(decoded) is type(value)
    assert decoded == value


async def test_round_tripped_datetimes_stay_timezone_aware() -> None:
    value = DeliverInput(deliveries=[], rejections=[], at=NOW, delivery_id="run/1")
    [decoded] = await DATA_CONVERTER.decode(
        await DATA_CONVERTER.encode([value]), [DeliverInput]
    )
    assert decoded.at.tzinfo is not None
    assert decoded.at == NOW


async def test_round_trip_keeps_event_payload_bytes_exact() -> None:
    event = result("detect", 0, payload=b'{ "odd" :  1.50 , "s":"\\u00e9" }')
    [decoded] = await DATA_CONVERTER.decode(
        await DATA_CONVERTER.encode([IngestBatch(events=[event])]), [IngestBatch]
    )
    assert decoded.events[0].payload == event.payload


async def test_data_converter_leaves_small_values_uncompressed_msgpack() -> None:
    [payload] = await DATA_CONVERTER.encode([IngestBatch()])
    assert payload.metadata["encoding"] == MSGPACK_ENCODING


async def test_data_converter_compresses_large_values() -> None:
    batch = IngestBatch(
        events=[result("detect", i % 2, event_id=f"e{i}") for i in range(50)]
    )
    [payload] = await DATA_CONVERTER.encode([batch])
    assert payload.metadata["encoding"] == ZSTD_ENCODING


@pytest.mark.parametrize(
    ("value", "encoding"),
    [(None, b"binary/null"), (b"\x00raw bytes", b"binary/plain")],
)
async def test_none_and_bytes_use_the_sdk_converters(
    value: Any, encoding: bytes
) -> None:
    [payload] = await DATA_CONVERTER.encode([value])
    assert payload.metadata["encoding"] == encoding
    assert await DATA_CONVERTER.decode([payload], [type(value)]) == [value]


async def test_json_plain_payload_decodes_into_a_struct() -> None:
    """What the CLI or UI sends: plain JSON, read with the type hint."""
    payload = Payload(
        metadata={"encoding": b"json/plain"},
        data=b'{"tenant_id": "tenant-a", "job_id": "job-1"}',
    )
    [decoded] = await DATA_CONVERTER.decode([payload], [JobInput])
    assert decoded == JobInput(tenant_id=TENANT, job_id=JOB)


async def test_json_plain_payload_decodes_tagged_events() -> None:
    batch = IngestBatch(events=[OPENED, result("detect", 0)], rejections=[REJECTION])
    payload = Payload(
        metadata={"encoding": b"json/plain"}, data=msgspec.json.encode(batch)
    )
    [decoded] = await DATA_CONVERTER.decode([payload], [IngestBatch])
    assert decoded == batch


# --- the codec ------------------------------------------------------------------


def msgpack_payload(data: bytes) -> Payload:
    return Payload(metadata={"encoding": MSGPACK_ENCODING}, data=data)


async def test_codec_compresses_large_payloads() -> None:
    codec = ZstdPayloadCodec()
    original = msgpack_payload(b'{"label": "car", "score": 0.5}' * 200)
    [encoded] = await codec.encode([original])
    assert encoded.metadata["encoding"] == ZSTD_ENCODING
    assert encoded.ByteSize() < original.ByteSize()
    assert await codec.decode([encoded]) == [original]


async def test_codec_passes_small_payloads_through_untouched() -> None:
    codec = ZstdPayloadCodec()
    original = msgpack_payload(b"\x92\x01\x02")
    [encoded] = await codec.encode([original])
    assert encoded == original
    assert encoded.metadata["encoding"] == MSGPACK_ENCODING


async def test_codec_passes_incompressible_payloads_through_untouched() -> None:
    codec = ZstdPayloadCodec()
    original = msgpack_payload(random.Random(7).randbytes(4096))
    [encoded] = await codec.encode([original])
    assert encoded == original


async def test_codec_decode_passes_foreign_encodings_through_unchanged() -> None:
    codec = ZstdPayloadCodec()
    foreign = [
        Payload(metadata={"encoding": b"binary/encrypted"}, data=b"\x01" * 500),
        Payload(metadata={"encoding": b"json/plain"}, data=b'{"a": 1}'),
        Payload(data=b"no metadata at all"),
    ]
    assert await codec.decode(foreign) == foreign


async def test_codec_encode_keeps_a_small_foreign_payload_unchanged() -> None:
    codec = ZstdPayloadCodec()
    foreign = Payload(metadata={"encoding": b"binary/encrypted"}, data=b"\x01\x02")
    assert await codec.encode([foreign]) == [foreign]


async def test_codec_round_trips_a_large_foreign_payload_exactly() -> None:
    """Whole payloads are wrapped, so foreign metadata survives compression."""
    codec = ZstdPayloadCodec()
    foreign = Payload(
        metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"k1"},
        data=b"\x01\x02\x03" * 500,
    )
    assert await codec.decode(await codec.encode([foreign])) == [foreign]


async def test_codec_handles_a_mixed_batch_in_order() -> None:
    codec = ZstdPayloadCodec()
    batch = [
        msgpack_payload(b"small"),
        msgpack_payload(b"abc" * 1000),
        Payload(metadata={"encoding": b"binary/encrypted"}, data=b"x"),
    ]
    encoded = await codec.encode(batch)
    assert [p.metadata["encoding"] for p in encoded] == [
        MSGPACK_ENCODING,
        ZSTD_ENCODING,
        b"binary/encrypted",
    ]
    assert await codec.decode(encoded) == batch


async def test_codec_respects_min_size() -> None:
    original = msgpack_payload(b"a" * 200)
    [kept] = await ZstdPayloadCodec(min_size=10_000).encode([original])
    [packed] = await ZstdPayloadCodec(min_size=10).encode([original])
    assert kept == original
    assert packed.metadata["encoding"] == ZSTD_ENCODING


# --- size against the SDK's default ---------------------------------------------


def realistic_batch(events: int = 500) -> IngestBatch:
    lines, _ = generate(WorkloadSpec(jobs=events // 5, types=2, parts=2, seed=3))
    parsed = [parse_event(line) for line in lines]
    assert not any(isinstance(p, Rejection) for p in parsed)
    batch = IngestBatch(events=parsed[:events])  # type: ignore[arg-type]
    assert len(batch.events) == events
    return batch


async def test_project_payloads_are_at_least_3x_smaller_than_the_sdk_default() -> None:
    batch = realistic_batch()
    [ours] = await DATA_CONVERTER.encode([batch])
    [default] = await DataConverter.default.encode([msgspec.to_builtins(batch)])
    ours_size, default_size = ours.ByteSize(), default.ByteSize()
    print(
        f"IngestBatch of {len(batch.events)} events: DATA_CONVERTER {ours_size} B, "
        f"DataConverter.default {default_size} B ({default_size / ours_size:.1f}x)"
    )
    assert ours_size * 3 <= default_size
    [decoded] = await DATA_CONVERTER.decode([ours], [IngestBatch])
    assert decoded == batch


# Decoding in several threads at once, each type's first use included: a
# worker's workflow activations run in a thread pool. Without
# prime_struct_types this crashed the interpreter (SIGSEGV in msgspec's
# mpack_decode) in most runs; each run is a fresh process, since a type's
# first use happens once per process.
_CONCURRENT_FIRST_DECODES = """
import sys, threading
import msgspec
from tests.support.payloads import examples
from wire._converter import prime_struct_types

sys.setswitchinterval(1e-6)
encoder = msgspec.msgpack.Encoder()
data = [(type(x), encoder.encode(x)) for x in examples()]
assert prime_struct_types() >= len({t for t, _ in data})
barrier = threading.Barrier(16)

def work(n):
    barrier.wait()
    for t, raw in data[n:] + data[:n]:
        msgspec.msgpack.Decoder(t).decode(raw)

threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


@pytest.mark.parametrize("run", range(5))
def test_payload_types_decode_in_many_threads_at_once_once_primed(run: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CONCURRENT_FIRST_DECODES],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]


async def test_the_largest_state_a_proxy_carries_fits_a_temporal_payload() -> None:
    """What a continuing proxy carries at most (a full de-duplication window
    and delivered-jobs list of 128-character ids, ``CARRY_BYTES`` of held
    events with incompressible payloads), encoded as it travels, stays under
    Temporal's 2 MiB payload limit with room to spare."""
    tenant, job = "t" * 128, "j" * 120
    state = ProxyState()
    for n in range(rules.RECENT_EVENT_IDS):
        state.recent[f"{tenant}/{job}{n:08d}/{os.urandom(60).hex()}"] = None
    for n in range(rules.DELIVERED_JOBS):
        state.delivered[f"{tenant}/{job}{n:08d}"] = None
    held = 0
    n = 0
    while held <= rules.CARRY_BYTES:
        event = AnalysisResult(
            event_id=os.urandom(64).hex(),
            tenant_id=tenant,
            job_id=f"{job}{n:08d}",
            analysis_type="detect",
            part=0,
            parts=2,
            # Random bytes as JSON text: nothing for the codec to squeeze.
            payload=b'"%s"' % base64.b64encode(os.urandom(4500)),
            at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        key = rules.job_key(tenant, event.job_id)
        state.outbox[key] = [event]
        state.queued_at[key] = event.at
        held += rules.event_bytes(event)
        n += 1
    state.held_bytes = held
    [payload] = await DATA_CONVERTER.encode(
        [ProxyInput(settings=ProxySettings(shard=0, shards=1), state=state)]
    )
    assert payload.ByteSize() < 1.8 * (1 << 20)
