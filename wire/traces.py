"""Trace context that travels with the data (OpenTelemetry, W3C Trace Context).

Temporal's own tracing (``temporalio.contrib.opentelemetry``) follows calls:
a workflow's spans hang off whoever started it, and a long-lived proxy was
started once, long ago. What a reader wants is the way of one batch of events:
from the request or emit batch that sent it, through the proxy's delivery, to
the job's publication and the sink write. So each batch carries the
``traceparent`` of the span that sent it; the proxy keeps, per job, the
traceparents of the batches its held events came in; and a delivery continues
the trace of each job's first batch, linking the others.

Everything here is a no-op when no tracer provider is configured (the
OpenTelemetry API's default), and costs nothing in the data then: no span, no
traceparent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry import context, trace
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER = trace.get_tracer("eventflow")
_PROPAGATOR = TraceContextTextMapPropagator()
# Links a span keeps at most (a delivery may carry hundreds of batches).
MAX_LINKS = 32

Attributes = Mapping[str, str | int | float | bool]


def traceparent() -> str | None:
    """The current span's ``traceparent``, or None when nothing is recorded."""
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def extract(headers: Mapping[str, str]) -> context.Context:
    """The context an incoming request's ``traceparent`` header names (the
    empty context when it names none)."""
    return _PROPAGATOR.extract(headers)


def _context_of(parent: str) -> context.Context:
    return _PROPAGATOR.extract({"traceparent": parent})


def _span_context_of(parent: str) -> trace.SpanContext | None:
    span_context = trace.get_current_span(_context_of(parent)).get_span_context()
    return span_context if span_context.is_valid else None


def unique(traceparents: Sequence[str | None]) -> list[str]:
    """The distinct traceparents, in order, at most MAX_LINKS."""
    return list(dict.fromkeys(t for t in traceparents if t))[:MAX_LINKS]


@contextmanager
def continuing(
    name: str,
    traceparents: Sequence[str | None],
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Attributes | None = None,
    tracer: trace.Tracer = TRACER,
) -> Iterator[Span]:
    """A span that continues the trace of the first of ``traceparents`` and
    links every one of them; a child of the current span when there are none.

    Batching joins many traces into one piece of work: the OpenTelemetry
    messaging conventions give such a span links to its inputs. Continuing the
    first as parent as well keeps a single-batch path (one request, one job)
    one trace from end to end.
    """
    parents = unique(traceparents)
    links = [Link(c) for c in map(_span_context_of, parents) if c is not None]
    parent = _context_of(parents[0]) if parents and links else None
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, links=links, attributes=attributes
    ) as span:
        yield span


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes | None = None,
    links: Sequence[str | None] = (),
    tracer: trace.Tracer = TRACER,
) -> Iterator[Span]:
    """A child of the current span, linking the spans of ``links``."""
    found = [Link(c) for c in map(_span_context_of, unique(links)) if c is not None]
    with tracer.start_as_current_span(
        name, kind=kind, attributes=attributes, links=found
    ) as s:
        yield s
