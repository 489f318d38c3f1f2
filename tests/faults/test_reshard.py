"""Scenario 7: the shard count changes from 4 to 2 while jobs are open, by
the documented procedure (README, "Changing the shard count"):

1. restart the workers with the new count;
2. switch the senders to the new count;
3. run ``script.worker --shards OLD --shard <removed> --retire``, which
   delivers what the removed shards' proxies still hold, closes them, and
   exits once no workflow is left on their task queues.

No event goes astray and no entity is stranded on a queue no worker polls.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from temporalio.client import WorkflowExecutionStatus

from actors import routing
from runtime.retire import running_on
from tests.support.audit import audit
from tests.support.faults import Row, all_landed, jobs, report, settle
from tests.support.processes import run_script
from tests.support.records import file_progress, file_records
from tests.support.temporal import address_of
from wire.synthetic import WorkloadSpec, generate

OLD, NEW = 4, 2
RETIRED = list(range(NEW, OLD))


async def test_shard_count_shrinks_while_jobs_are_open(
    temporal, worker_process, tmp_path: Path
) -> None:
    spec = WorkloadSpec(
        tenants=8,
        jobs=jobs(200, 2000),
        types=3,
        parts=2,
        duplicates=0.05,
        invalid=0.01,
        seed=17,
        run="reshard-",
    )
    lines, expected = generate(spec)
    # Events of a job are spread over the stream, so cutting it in half
    # leaves most jobs open across the change.
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    half = len(lines) // 2
    first.write_bytes(b"\n".join(lines[:half]) + b"\n")
    second.write_bytes(b"\n".join(lines[half:]) + b"\n")
    out = tmp_path / "out"
    address = address_of(temporal)
    sink = ["--sink", f"file:{out}", "--summary-interval", "1"]

    # Before: four shards. The proxies hold what they take for 20 s, so the
    # removed shards still hold acknowledged events when the count changes.
    old = worker_process(address, ["--shards", str(OLD), "--proxy-hold", "20", *sink])
    run_script(
        "script.emit", "--file", str(first), "--shards", str(OLD), address=address
    )
    old.kill()
    changed = time.monotonic()

    # 1. Workers with the new count.
    worker_process(address, ["--shards", str(NEW), *sink])
    # 2. Senders with the new count.
    emitted = run_script(
        "script.emit",
        "--file",
        str(second),
        "--shards",
        str(NEW),
        "--json",
        address=address,
    )
    assert json.loads(emitted.stdout)["sent"] == len(lines) - half
    # 3. Retire the removed shards: the process exits once they are empty.
    retiring = worker_process(
        address,
        [
            "--shards",
            str(OLD),
            "--shard",
            ",".join(map(str, RETIRED)),
            "--retire",
            *sink,
        ],
    )
    assert retiring.process is not None
    assert retiring.process.wait(timeout=300) == 0
    log = [
        json.loads(line)
        for line in retiring.log.read_text().splitlines()
        if line.startswith("{")
    ]
    held = sum(r["held"] for r in log if r.get("event") == "proxy retired")
    assert held > 0, "the removed shards held acknowledged events when retired"

    landed = await settle(lambda: file_progress(out), all_landed(expected))
    client = temporal.client
    assert await running_on(client, RETIRED) == 0
    for shard in RETIRED:
        proxy = await client.get_workflow_handle(routing.proxy_id(shard)).describe()
        assert proxy.status == WorkflowExecutionStatus.COMPLETED
    # Every entity lives on the entity queue, whatever the shard count.
    stranded = await client.count_workflows(
        f"TaskQueue != '{routing.ENTITY_TASK_QUEUE}' AND ExecutionStatus = 'Running'"
        " AND WorkflowType != 'Proxy'"
    )
    assert stranded.count == 0

    result = audit(file_records(out), expected)
    report(
        Row.of(
            "7. shard count 4 -> 2",
            result,
            events_sent=len(lines),
            faults=f"shards 4 -> 2 mid-run; {held} held events on retired shards",
            recovery_s=landed - changed,
        )
    )
    assert result.clean, result.problems()
