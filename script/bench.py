"""Benchmarks: ``python -m script.bench``.

So far one measurement: history bytes per event. The same generated workload
runs twice on fresh in-memory dev servers with in-process workers, once with
the project's data converter (msgpack + Zstandard) and once with plain JSON
payloads (what Temporal's default converter writes), and the bytes every
workflow run stored in history are divided by the events accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import msgspec
from temporalio.client import Client
from temporalio.converter import (
    BinaryNullPayloadConverter,
    BinaryPlainPayloadConverter,
    BinaryProtoPayloadConverter,
    CompositePayloadConverter,
    DataConverter,
    JSONProtoPayloadConverter,
)
from temporalio.testing import WorkflowEnvironment

from actors.client import EventSender
from actors.config import WorkerConfig
from actors.pipelines import collected
from actors.worker import build_workers
from script.devserver import temporal_binary
from sinks import FileSink
from wire import DATA_CONVERTER
from wire._converter import MsgspecJSONPayloadConverter
from wire.synthetic import WorkloadSpec, generate


class JSONPayloadConverterSet(CompositePayloadConverter):
    """The SDK's default converters, with JSON done by msgspec so that the
    project's Structs encode: payloads as Temporal's default JSON writes them."""

    def __init__(self) -> None:
        super().__init__(
            BinaryNullPayloadConverter(),
            BinaryPlainPayloadConverter(),
            JSONProtoPayloadConverter(),
            BinaryProtoPayloadConverter(),
            MsgspecJSONPayloadConverter(),
        )


JSON_CONVERTER = DataConverter(payload_converter_class=JSONPayloadConverterSet)


async def history_bytes(client: Client) -> tuple[int, int]:
    """Total history bytes and runs, over every workflow run on the server."""
    total = runs = 0
    async for execution in client.list_workflows():
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        info = (await handle.describe()).raw_description.workflow_execution_info
        total += info.history_size_bytes
        runs += 1
    return total, runs


async def measure(converter: DataConverter, spec: WorkloadSpec) -> dict[str, float]:
    lines, expected = generate(spec)
    events = sum(expected.events(k) for k in expected.payloads)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), data_converter=converter, ui=False
    )
    try:
        config = WorkerConfig(shards=4)
        with tempfile.TemporaryDirectory() as out:
            sink = FileSink(out)
            workers = build_workers(
                env.client,
                config=config,
                sink=sink,
                pipeline=collected,
                shards=range(4),
            )
            for worker in workers:
                await worker.__aenter__()
            try:
                sender = EventSender(env.client, shards=4)
                for line in lines:
                    await sender.send(line)
                await sender.flush()
                results = Path(out) / "job.result.jsonl"
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    if (
                        results.exists()
                        and results.read_bytes().count(b"\n") >= spec.jobs
                    ):
                        break
                    await asyncio.sleep(0.5)
                await asyncio.sleep(2)
            finally:
                for worker in workers:
                    await worker.__aexit__(None, None, None)
                await sink.close()
        total, runs = await history_bytes(env.client)
    finally:
        await env.shutdown()
    return {
        "history_bytes": total,
        "runs": runs,
        "events": events,
        "bytes_per_event": round(total / events, 1),
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    spec = WorkloadSpec(tenants=10, jobs=args.jobs, types=4, parts=10, seed=1)
    codec = await measure(DATA_CONVERTER, spec)
    json = await measure(JSON_CONVERTER, spec)
    return {
        "workload": {"jobs": spec.jobs, "types": spec.types, "parts": spec.parts},
        "codec": codec,
        "json": json,
        "ratio": round(json["bytes_per_event"] / codec["bytes_per_event"], 2),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m script.bench", description=__doc__)
    p.add_argument("--jobs", type=int, default=200)
    result = asyncio.run(main(p.parse_args()))
    print(msgspec.json.format(msgspec.json.encode(result)).decode())
