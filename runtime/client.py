"""Connecting to Temporal the SDK's standard way, with the project's data
converter."""

from __future__ import annotations

import asyncio

import structlog
from temporalio.client import Client
from temporalio.envconfig import ClientConfig

from wire import DATA_CONVERTER

log = structlog.get_logger(__name__)


async def connect(**overrides: object) -> Client:
    """A client configured the SDK's standard way (TEMPORAL_ADDRESS,
    TEMPORAL_NAMESPACE, TLS and API key variables, or a profile file), with
    the project's data converter."""
    config = ClientConfig.load_client_connect_config()
    config.setdefault("target_host", "localhost:7233")
    config.update(overrides)  # type: ignore[typeddict-item]
    return await Client.connect(**config, data_converter=DATA_CONVERTER)  # type: ignore[misc]


async def connect_within(timeout_s: float, **overrides: object) -> Client:
    """``connect()``, retried with backoff while the server is unreachable, for
    up to ``timeout_s``: a command started before its server (or during a
    restart) waits for it instead of failing at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.5
    while True:
        try:
            return await connect(**overrides)
        except RuntimeError as exc:  # the SDK's "Failed client connect"
            if loop.time() + delay > deadline:
                raise ConnectionError(
                    f"Temporal not reachable within {timeout_s:g}s: {exc}"
                ) from exc
            log.warning("Temporal not reachable yet; retrying", retry_in_s=delay)
            await asyncio.sleep(delay)
