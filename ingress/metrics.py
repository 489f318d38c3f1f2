"""Prometheus metrics of the HTTP ingress."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "eventflow_ingress_requests",
    "HTTP requests answered, by route and status code.",
    ["route", "status"],
)
REQUEST_SECONDS = Histogram(
    "eventflow_ingress_request_seconds",
    "Time to answer one request (a 2xx waits for the ingest update).",
    ["route"],
)
