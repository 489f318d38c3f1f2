"""Record fresh histories for the replay tests: ``python -m tests.replay.record``.

Runs the replay scenario on a throwaway dev server with in-process workers and
writes every run of every workflow (as the server stores it, encoded by the
project's codec) to ``tests/histories/``. Re-record after an intended,
replay-compatible change, and commit the new files beside the old ones: old
histories must keep replaying.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from actors.contracts import SEARCH_ATTRIBUTES
from script.devserver import temporal_binary
from tests.support.scenario import SCENARIO_CONFIG, run_scenario, running_workers
from wire import DATA_CONVERTER

HISTORIES = Path(__file__).resolve().parent.parent / "histories"


async def record(target: Path) -> list[Path]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=DATA_CONVERTER,
        ui=False,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    written = []
    try:
        with tempfile.TemporaryDirectory() as out:
            async with running_workers(
                env.client, Path(out), SCENARIO_CONFIG, lagging=True
            ):
                await run_scenario(env.client)
                seen: dict[str, int] = {}
                async for execution in env.client.list_workflows():
                    kind = execution.workflow_type.lower()
                    seen[kind] = seen.get(kind, 0) + 1
                    handle = env.client.get_workflow_handle(
                        execution.id, run_id=execution.run_id
                    )
                    history = await handle.fetch_history()
                    path = target / f"{kind}-{seen[kind]:02d}.json"
                    path.write_text(history.to_json())
                    written.append(path)
    finally:
        await env.shutdown()
    return written


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HISTORIES / "v1"
    target.mkdir(parents=True, exist_ok=True)
    paths = asyncio.run(record(target))
    print(f"recorded {len(paths)} histories in {target}")


if __name__ == "__main__":
    main()
