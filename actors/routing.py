"""Where things live: shards, task queues and workflow ids.

The shard of a job is a stable hash of ``{tenant_id}/{job_id}`` modulo the shard
count: CRC-32, identical in every process and on every machine (Python's
``hash()`` is salted per process and would scatter a job across shards).
Workflow ids embed the tenant, and ids cannot contain '/', so no event can
name an entity of another tenant.

Only the proxies live on per-shard task queues. Jobs and tenants live on one
entity task queue that every worker process polls, so where an entity runs
never depends on the shard count: changing it strands no entity.
"""

from __future__ import annotations

import hashlib
import zlib

DEFAULT_SHARDS = 4
TASK_QUEUE_PREFIX = "eventflow-shard-"
ENTITY_TASK_QUEUE = "eventflow-entities"


def shard_of(tenant_id: str, job_id: str, shards: int) -> int:
    return zlib.crc32(f"{tenant_id}/{job_id}".encode()) % shards


def raw_shard(raw: bytes, shards: int) -> int:
    """Shard for input whose ids could not be read (it is only dead-lettered)."""
    return zlib.crc32(raw) % shards


def task_queue(shard: int) -> str:
    return f"{TASK_QUEUE_PREFIX}{shard}"


def proxy_id(shard: int) -> str:
    return f"proxy/{shard}"


def job_id_of(tenant_id: str, job_id: str) -> str:
    return f"job/{tenant_id}/{job_id}"


def job_run_id(tenant_id: str, job_id: str, generation: int) -> str:
    """The workflow id of one generation of a job: ``job_id_of`` for the
    first, then ``job/{tenant}/{job}/{n}`` for the n-th reopening (ids hold
    no '/', so no job's id is another's generation)."""
    base = job_id_of(tenant_id, job_id)
    return base if generation == 0 else f"{base}/{generation}"


def job_of_run_id(workflow_id: str) -> tuple[str, str, int] | None:
    """``(tenant_id, job_id, generation)`` of a job workflow id
    (``job_run_id``); None for any other workflow id."""
    kind, *parts = workflow_id.split("/")
    if kind != "job" or len(parts) not in (2, 3):
        return None
    if len(parts) == 2:
        return parts[0], parts[1], 0
    if not parts[2].isdigit() or parts[2].startswith("0"):
        return None
    return parts[0], parts[1], int(parts[2])


def tenant_id_of(tenant_id: str) -> str:
    return f"tenant/{tenant_id}"


CATCH_UP_PREFIX = "sink-catch-up/"


def catch_up_id(sink: str, keys: list[tuple[str, str]]) -> str:
    """The catch-up workflow of these (kind, record id) pairs for ``sink``:
    the same records deferred twice (a retried activity) name the same one."""
    sink_digest = hashlib.sha256(sink.encode()).hexdigest()[:12]
    digest = hashlib.sha256()
    for kind, record_id in sorted(keys):
        digest.update(f"{kind}\x00{record_id}\x00".encode())
    return f"{CATCH_UP_PREFIX}{sink_digest}/{digest.hexdigest()[:32]}"
