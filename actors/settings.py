"""Worker configuration: one frozen value built at start-up and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from actors.pipelines import DEFAULT as DEFAULT_PIPELINE
from actors.routing import DEFAULT_SHARDS
from actors.rules.job import JobSettings
from actors.rules.proxy import ProxySettings
from actors.rules.tenant import TenantSettings
from wire.validate import DEFAULT_MAX_PAYLOAD_BYTES

DEFAULT_SINK = "file:./data/out"


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


def default_shards() -> int:
    """The shard count every process must agree on (EVENTFLOW_SHARDS)."""
    return env_int("EVENTFLOW_SHARDS", DEFAULT_SHARDS)


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """Everything a worker process needs to know, from flags and environment."""

    shards: int = DEFAULT_SHARDS
    sink: str = DEFAULT_SINK
    pipeline: str = DEFAULT_PIPELINE
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    job: JobSettings = field(default_factory=JobSettings)
    tenant: TenantSettings = field(default_factory=TenantSettings)
    max_pending: int = 50_000
    delivery_batch: int = 2_000
    max_deliveries: int = 4
    # Concurrent job updates within one delivery activity.
    delivery_concurrency: int = 64
    proxy_continue_as_new_after: int | None = None
    rollup_interval_s: float = 5.0
    hold_s: float = 0.5

    def proxy_settings(self, shard: int) -> ProxySettings:
        return ProxySettings(
            shard=shard,
            shards=self.shards,
            max_payload_bytes=self.max_payload_bytes,
            max_pending=self.max_pending,
            delivery_batch=self.delivery_batch,
            max_deliveries=self.max_deliveries,
            continue_as_new_after=self.proxy_continue_as_new_after,
            rollup_interval_s=self.rollup_interval_s,
            hold_s=self.hold_s,
        )
