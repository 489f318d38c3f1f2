"""One trace from an HTTP request, and one from an emit batch, through the
proxy's delivery to the job's publication and the sink write.

Real processes (a dev server, ``script.worker``, ``script.ingress``,
``script.emit``) export their spans over OTLP/HTTP, as
``OTEL_EXPORTER_OTLP_ENDPOINT`` tells them, to a receiver in the test that
decodes the OTLP protobuf requests.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from actors import names
from tests.support.events import opened, part
from tests.support.faults import write_events
from tests.support.polling import wait_until
from tests.support.processes import Emitter
from tests.support.records import file_progress
from tests.support.temporal import address_of


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    links: tuple[str, ...]  # the linked spans' ids
    attributes: dict[str, str]


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver: what a collector would get."""

    url: str = ""
    spans: list[Span] = field(default_factory=list)

    async def traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    self.spans.append(
                        Span(
                            service=service,
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            links=tuple(link.span_id.hex() for link in s.links),
                            attributes={
                                a.key: str(
                                    getattr(a.value, a.value.WhichOneof("value"))
                                )
                                for a in s.attributes
                            },
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def named(self, name: str, trace_id: str | None = None) -> list[Span]:
        return [
            s
            for s in self.spans
            if s.name == name and (trace_id is None or s.trace_id == trace_id)
        ]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", found.traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}"
    try:
        yield found
    finally:
        await runner.cleanup()


def job_lines(job: str) -> list[bytes]:
    return [
        opened("acme", job, ["detect"]),
        part("acme", job, "detect", 0, 2),
        part("acme", job, "detect", 1, 2),
    ]


async def test_a_request_and_an_emit_batch_are_each_one_trace_to_the_sink(
    temporal,
    worker_process,
    ingress_process,
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    out = tmp_path / "out"
    address = address_of(temporal)
    worker_process(address, ["--shards", "2", "--sink", f"file:{out}"])
    ingress = ingress_process(address, ["--shards", "2"])

    # The caller's own span, as a service upstream of the ingress would send.
    caller_trace, caller_span = os.urandom(16).hex(), os.urandom(8).hex()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            ingress.url + "/events",
            data=b"\n".join(job_lines("by-http")),
            headers={
                "Content-Type": "application/x-ndjson",
                "traceparent": f"00-{caller_trace}-{caller_span}-01",
            },
        ) as response,
    ):
        assert response.status == 200, await response.text()
    summary = Emitter(
        address, write_events(tmp_path, job_lines("by-emit")), "--shards", "2"
    ).wait()
    assert summary["accepted"] == 3

    await wait_until(lambda: file_progress(out), lambda p: p.results >= 2, limit_s=60)

    def written(job: str) -> list[Span]:
        jobs = {s.span_id: s for s in receiver.named("eventflow.deliver.job")}
        return [
            s
            for s in receiver.named("eventflow.sink.write")
            if s.parent_id in jobs
            and jobs[s.parent_id].attributes["eventflow.job_id"] == job
            and "job.result" in s.attributes["eventflow.kinds"]
        ]

    # Spans are exported in batches, in the background: wait for the last.
    for _ in range(100):
        if written("by-http") and written("by-emit"):
            break
        await asyncio.sleep(0.2)

    # The request: the caller's trace from the ingress to the sink.
    (request,) = receiver.named("POST /events", caller_trace)
    assert (request.service, request.parent_id) == ("eventflow-ingress", caller_span)
    (send,) = receiver.named("eventflow.send", caller_trace)
    assert (send.service, send.parent_id) == ("eventflow-ingress", request.span_id)
    assert send.attributes["eventflow.accepted"] == "3"
    (update,) = receiver.named(
        f"StartUpdateWithStartWorkflow:{names.PROXY}", caller_trace
    )
    assert update.parent_id == send.span_id
    (job,) = [
        s
        for s in receiver.named("eventflow.deliver.job", caller_trace)
        if s.attributes["eventflow.job_id"] == "by-http"
    ]
    assert (job.service, job.parent_id) == ("eventflow-worker", send.span_id)
    # A new job is started with its events (an eager start), in the trace.
    assert receiver.named(f"StartWorkflow:{names.JOB}", caller_trace)
    (write,) = written("by-http")
    assert write.trace_id == caller_trace
    # The delivery that carried it links the batch.
    assert any(send.span_id in d.links for d in receiver.named("eventflow.deliver"))

    # The emit batch: a trace of its own, from emit to the sink.
    (emitted,) = [
        s for s in receiver.named("eventflow.send") if s.service == "eventflow-emit"
    ]
    assert emitted.parent_id == ""
    (emit_write,) = written("by-emit")
    assert emit_write.trace_id == emitted.trace_id != caller_trace
