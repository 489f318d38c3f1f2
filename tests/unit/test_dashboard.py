"""The Grafana dashboard in docs/ asks only for metrics the code serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import actors.metrics  # noqa: F401  (registers the activities' metrics)
import ingress.metrics  # noqa: F401
import sinks.metrics  # noqa: F401

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
# Counted by the proxies through the SDK's workflow.metric_meter().
WORKFLOW_METRICS = {
    "eventflow_events_total",
    "eventflow_proxy_held_events",
    "eventflow_proxy_oldest_held_seconds",
}


def served() -> set[str]:
    # A labelled metric has no sample before its first use: name its series
    # from the family's type.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names = set(WORKFLOW_METRICS)
    for family in REGISTRY.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def test_every_dashboard_query_names_a_served_metric() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    asked = {
        name
        for panel in panels
        for target in panel["targets"]
        for name in re.findall(r"eventflow_[a-z_]+", target["expr"])
    }
    assert asked
    assert asked - served() == set()
