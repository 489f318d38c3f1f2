"""Prometheus metrics of the activities (process-wide, ``prometheus_client``).

The proxies' own figures (events by outcome, what they hold) come from
workflow code through the SDK's replay-safe ``workflow.metric_meter()``; see
``actors/proxy.py``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERY_SECONDS = Histogram(
    "eventflow_delivery_seconds",
    "Duration of one delivery activity attempt (many jobs' updates, and the "
    "writes of what they hand back).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DELIVERIES_IN_FLIGHT = Gauge(
    "eventflow_deliveries_in_flight", "Delivery activities running in this process."
)
JOB_DELIVERIES = Counter(
    "eventflow_job_deliveries_total",
    "Deliveries to one job, by how they reached it: eager_start (a new job "
    "started with the batch in its input, its first task run in this "
    "process), start (the same, the task dispatched by the server), "
    "start_refused (the job existed, so an update follows), update (an "
    "update, starting the job if there is none).",
    ["how"],
)
