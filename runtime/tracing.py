"""OpenTelemetry traces, exported over OTLP when the standard variables say so.

Off unless ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (and ``OTEL_SDK_DISABLED`` is not
``true``, nor ``OTEL_TRACES_EXPORTER`` ``none``). Then a process exports its
spans over OTLP/HTTP (protobuf) to that endpoint, named by ``OTEL_SERVICE_NAME``
or after the command, and every Temporal client it connects carries the SDK's
``TracingInterceptor``: client calls, workflow handlers and activities get
spans, and trace context travels in Temporal headers. The project's own spans
and the context it carries in the data are in ``wire.traces``.

The exporter reads the rest of the standard variables itself
(``OTEL_EXPORTER_OTLP_HEADERS``, ``..._TIMEOUT``, ``..._CERTIFICATE``...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from temporalio.client import Interceptor

ENDPOINT_VARIABLES = (
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
PROTOCOL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
)
SUPPORTED_PROTOCOL = "http/protobuf"

_provider: TracerProvider | None = None


class TracingMisconfigured(ValueError):
    """The OTLP variables ask for something this process cannot do."""


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def configure_tracing(
    service: str,
    *,
    environ: Mapping[str, str] = os.environ,
    exporter: SpanExporter | None = None,
) -> TracerProvider | None:
    """Install a tracer provider for this process if traces are wanted (or an
    ``exporter`` is given, as tests do); returns it, or None when off.

    Raises:
        TracingMisconfigured: the variables ask for an OTLP protocol other
            than http/protobuf.
    """
    global _provider
    if exporter is None:
        if not wanted(environ):
            return None
        for name in PROTOCOL_VARIABLES:
            protocol = environ.get(name, "").strip()
            if protocol:
                if protocol != SUPPORTED_PROTOCOL:
                    raise TracingMisconfigured(
                        f"{name}={protocol}: traces are exported over "
                        f"{SUPPORTED_PROTOCOL} only; unset it or set "
                        f"{SUPPORTED_PROTOCOL} (a collector's port 4318)"
                    )
                break
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        exporter = OTLPSpanExporter()
    name = environ.get("OTEL_SERVICE_NAME", "").strip() or service
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def active() -> bool:
    """Whether spans are being recorded in this process (a provider of the
    OpenTelemetry SDK is installed, by ``configure_tracing`` or a test)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def client_interceptors() -> list[Interceptor]:
    """The interceptors a Temporal client gets: the SDK's tracing interceptor
    while traces are recorded (workers built on the client use it too)."""
    if not active():
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def flush(timeout_s: float = 5.0) -> None:
    """Export what is still buffered (before a process exits)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))
