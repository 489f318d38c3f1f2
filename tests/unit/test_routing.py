"""Routing: stable shards and tenant-scoped workflow ids."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from actors import routing
from actors.routing import (
    ENTITY_TASK_QUEUE,
    TASK_QUEUE_PREFIX,
    job_id_of,
    job_of_run_id,
    job_run_id,
    proxy_id,
    raw_shard,
    shard_of,
    task_queue,
    tenant_id_of,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("tenant_id", "job_id", "shards", "expected"),
    [
        # Pinned values: a change here moves running jobs to other shards.
        ("tenant-a", "job-1", 4, 3),
        ("tenant-000", "job-000042", 8, 5),
        ("acme", "invoice-7", 16, 11),
    ],
)
def test_shard_of_is_pinned_to_crc32_of_tenant_slash_job(
    tenant_id: str, job_id: str, shards: int, expected: int
) -> None:
    assert zlib.crc32(f"{tenant_id}/{job_id}".encode()) % shards == expected
    assert shard_of(tenant_id, job_id, shards) == expected


def test_raw_shard_is_crc32_based() -> None:
    assert raw_shard(b"not json", 4) == zlib.crc32(b"not json") % 4 == 2


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 7, 16, 64])
def test_shards_are_within_range(shards: int) -> None:
    for n in range(300):
        assert 0 <= shard_of(f"tenant-{n % 7}", f"job-{n}", shards) < shards
        assert 0 <= raw_shard(n.to_bytes(4, "big"), shards) < shards


def test_shard_of_spreads_jobs_over_every_shard() -> None:
    seen = {shard_of("tenant-a", f"job-{n}", 8) for n in range(200)}
    assert seen == set(range(8))


def test_shard_of_is_the_same_in_every_process() -> None:
    """Python's hash() is salted per process; the shard must not be."""
    script = (
        "from actors.routing import shard_of;"
        "print([shard_of('tenant-a', f'job-{n}', 16) for n in range(50)])"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        run = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        outputs.add(run.stdout)
    shards = [shard_of("tenant-a", f"job-{n}", 16) for n in range(50)]
    assert outputs == {f"{shards}\n"}


def test_routing_uses_no_randomness_or_salted_hash() -> None:
    """No random, uuid or secrets import and no call to the builtin hash()."""
    tree = ast.parse(Path(routing.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.partition(".")[0])
    called = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not imported & {"random", "uuid", "secrets"}
    assert "hash" not in called


def test_a_jobs_generations_have_ids_of_their_own_that_name_the_job() -> None:
    assert job_run_id("t", "j", 0) == job_id_of("t", "j")
    ids = [job_run_id("t", "j", g) for g in range(3)]
    assert ids == ["job/t/j", "job/t/j/1", "job/t/j/2"]
    assert [job_of_run_id(i) for i in ids] == [("t", "j", g) for g in range(3)]
    # Not a job's generation: other workflows, and ids no job run has.
    for other in [
        "tenant/t",
        "proxy/1",
        "job/t",
        "job/t/j/01",
        "job/t/j/x",
        "job/a/b/1/2",
    ]:
        assert job_of_run_id(other) is None


def test_job_workflow_id_embeds_the_tenant() -> None:
    assert job_id_of("tenant-a", "job-1") == "job/tenant-a/job-1"
    assert job_id_of("tenant-a", "job-1") != job_id_of("tenant-b", "job-1")


def test_tenant_workflow_id_embeds_the_tenant() -> None:
    assert tenant_id_of("tenant-a") == "tenant/tenant-a"


def test_proxy_ids_and_task_queues_name_the_shard() -> None:
    assert proxy_id(3) == "proxy/3"
    assert task_queue(3) == f"{TASK_QUEUE_PREFIX}3"
    assert len({task_queue(n) for n in range(8)}) == 8


def test_entities_live_on_one_queue_apart_from_every_shard() -> None:
    """Where a job or tenant runs must not depend on the shard count."""
    assert ENTITY_TASK_QUEUE not in {task_queue(n) for n in range(64)}
