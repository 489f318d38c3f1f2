"""Every production workflow, for workers and the replayer to register."""

from __future__ import annotations

from actors.catchup import SinkCatchUpWorkflow
from actors.job import JobWorkflow
from actors.proxy import ProxyWorkflow
from actors.tenant import TenantWorkflow

WORKFLOWS = [ProxyWorkflow, JobWorkflow, TenantWorkflow, SinkCatchUpWorkflow]

__all__ = [
    "WORKFLOWS",
    "JobWorkflow",
    "ProxyWorkflow",
    "SinkCatchUpWorkflow",
    "TenantWorkflow",
]
