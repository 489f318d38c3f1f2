"""Trace context carried in the data (``wire.traces``) and kept by the proxy,
checked with the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, Tracer

from actors.rules import proxy as rules
from runtime import tracing
from tests.unit.test_proxy_rules import SETTINGS, T0, result
from wire import traces


@pytest.fixture
def spans() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def test_no_span_no_traceparent() -> None:
    assert traces.traceparent() is None


def test_a_traceparent_names_the_current_span(spans) -> None:
    tracer, _ = spans
    with tracer.start_as_current_span("send") as span:
        parent = traces.traceparent()
    context = span.get_span_context()
    assert parent is not None
    assert parent.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")


def test_a_batch_span_continues_the_first_trace_and_links_them_all(spans) -> None:
    tracer, exporter = spans
    sent = []
    for name in ("a", "b", "c"):
        with tracer.start_as_current_span(name):
            sent.append(traces.traceparent())
    with traces.continuing(
        "deliver", [sent[0], None, sent[1], sent[0], sent[2]], tracer=tracer
    ):
        pass
    found = by_name(exporter)
    deliver = found["deliver"]
    assert deliver.kind == SpanKind.CONSUMER
    first = found["a"].context
    assert deliver.context.trace_id == first.trace_id
    assert deliver.parent is not None
    assert deliver.parent.span_id == first.span_id
    assert [link.context.span_id for link in deliver.links] == [
        found[n].context.span_id for n in ("a", "b", "c")
    ]


def test_without_traceparents_a_batch_span_is_a_child_of_the_current_one(spans) -> None:
    tracer, exporter = spans
    with (
        tracer.start_as_current_span("activity"),
        traces.continuing("deliver", [None, "not a traceparent"], tracer=tracer),
    ):
        pass
    found = by_name(exporter)
    assert found["deliver"].parent.span_id == found["activity"].context.span_id
    assert found["deliver"].links == ()


def test_links_are_capped() -> None:
    many = [f"00-{n:032x}-{n:016x}-01" for n in range(1, 100)]
    assert traces.unique(many + many) == many[: traces.MAX_LINKS]


def test_the_proxy_keeps_each_jobs_batch_traces_and_hands_them_to_its_delivery() -> (
    None
):
    state = rules.ProxyState()
    one, two = (
        "00-" + "1" * 32 + "-" + "1" * 16 + "-01",
        "00-" + "2" * 32 + "-" + "2" * 16 + "-01",
    )
    rules.ingest(
        state, rules.IngestBatch(events=[result("j", 0)], trace=one), SETTINGS, now=T0
    )
    rules.ingest(
        state, rules.IngestBatch(events=[result("j", 1)], trace=two), SETTINGS, now=T0
    )
    rules.ingest(
        state, rules.IngestBatch(events=[result("j", 2)], trace=one), SETTINGS, now=T0
    )
    rules.ingest(state, rules.IngestBatch(events=[result("k", 0)]), SETTINGS, now=T0)
    taken = {d.job_id: d for d in rules.take(state, 100, set())}
    assert taken["j"].traces == [one, two]
    assert taken["k"].traces == []
    assert state.traces == {}
    # A failed delivery puts them back with its events.
    rules.requeue(state, [taken["j"]], [])
    assert state.traces == {"tenant-a/j": [one, two]}


def test_traces_stay_off_without_an_endpoint() -> None:
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert tracing.configure_tracing("x", environ={}) is None


def test_a_grpc_protocol_is_refused_with_what_to_do() -> None:
    with pytest.raises(tracing.TracingMisconfigured, match="http/protobuf"):
        tracing.configure_tracing(
            "x",
            environ={
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
        )
