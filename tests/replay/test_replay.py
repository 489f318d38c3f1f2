"""Replay every committed history with the current workflow code and the real
data converter. A failure here means a workflow change is not replay-safe:
guard it with ``workflow.patched`` and record a new history folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from actors import names
from actors.workflows import WORKFLOWS
from runtime.worker import workflow_runner
from tests.replay.broken import ReorderedJobWorkflow
from wire import DATA_CONVERTER

HISTORIES = sorted((Path(__file__).parent.parent / "histories").rglob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def replayer(workflows: list[type]) -> Replayer:
    return Replayer(
        workflows=workflows,
        data_converter=DATA_CONVERTER,
        workflow_runner=workflow_runner(strict=True),
    )


def test_histories_are_committed_for_every_workflow() -> None:
    kinds = {path.stem.split("-")[0] for path in HISTORIES}
    expected = {names.PROXY, names.JOB, names.TENANT, names.SINK_CATCH_UP}
    assert len(expected) == len(WORKFLOWS)
    assert kinds == {name.lower() for name in expected}


@pytest.mark.parametrize(
    "path", HISTORIES, ids=[str(p.relative_to(p.parents[1])) for p in HISTORIES]
)
async def test_history_replays_with_current_code(path: Path) -> None:
    result = await replayer(WORKFLOWS).replay_workflow(load(path))
    assert result.replay_failure is None


@pytest.mark.parametrize(
    "path",
    [p for p in HISTORIES if p.stem.startswith("job-")][:3],
    ids=lambda p: p.stem,
)
async def test_unguarded_workflow_change_fails_replay(path: Path) -> None:
    with pytest.raises(NondeterminismError):
        await replayer([ReorderedJobWorkflow]).replay_workflow(load(path))
