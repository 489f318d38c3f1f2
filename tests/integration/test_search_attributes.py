"""A worker makes sure the jobs' search attributes exist before it polls:
it adds them to a namespace that lacks them, and leaves them be after."""

from __future__ import annotations

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from runtime.search_attributes import REQUIRED, ensure_search_attributes
from script.devserver import temporal_binary
from wire import DATA_CONVERTER


async def test_missing_search_attributes_are_added_once() -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=DATA_CONVERTER,
        ui=False,
        dev_server_log_level="error",
    )
    try:
        client = env.client

        async def custom() -> dict[str, int]:
            listed = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=client.namespace)
            )
            return dict(listed.custom_attributes)

        before = await custom()
        await ensure_search_attributes(client)
        after = await custom()
        await ensure_search_attributes(client)  # already there: nothing to do
        again = await custom()
    finally:
        await env.shutdown()
    assert not set(REQUIRED) & set(before)
    assert {name: after[name] for name in REQUIRED} == REQUIRED
    assert again == after
