"""Connecting to Temporal the SDK's standard way, with the project's data
converter."""

from __future__ import annotations

import stamina
import structlog
from temporalio.client import Client
from temporalio.envconfig import ClientConfig

from runtime.tracing import client_interceptors
from wire import DATA_CONVERTER

log = structlog.get_logger(__name__)


async def connect(**overrides: object) -> Client:
    """A client configured the SDK's standard way (TEMPORAL_ADDRESS,
    TEMPORAL_NAMESPACE, TLS and API key variables, or a profile file), with
    the project's data converter."""
    config = ClientConfig.load_client_connect_config()
    config.setdefault("target_host", "localhost:7233")
    config.update(overrides)  # type: ignore[typeddict-item]
    # While traces are recorded, the SDK's tracing interceptor (the workers
    # built on this client use it too).
    config.setdefault("interceptors", client_interceptors())  # type: ignore[typeddict-item]
    return await Client.connect(**config, data_converter=DATA_CONVERTER)  # type: ignore[misc]


# Backoff while the server is unreachable: from half a second, doubling up
# to five, with as much jitter again as the first wait.
CONNECT_WAIT_INITIAL_S = 0.5
CONNECT_WAIT_MAX_S = 5.0


async def connect_within(timeout_s: float, **overrides: object) -> Client:
    """``connect()``, retried with backoff while the server is unreachable, for
    up to ``timeout_s``: a command started before its server (or during a
    restart) waits for it instead of failing at once.

    Raises:
        ConnectionError: still unreachable after ``timeout_s``.
    """
    failure: RuntimeError | None = None
    try:
        async for attempt in stamina.retry_context(
            on=RuntimeError,  # the SDK's "Failed client connect"
            attempts=None if timeout_s > 0 else 1,
            timeout=timeout_s if timeout_s > 0 else None,
            wait_initial=CONNECT_WAIT_INITIAL_S,
            wait_max=CONNECT_WAIT_MAX_S,
            wait_jitter=CONNECT_WAIT_INITIAL_S,
        ):
            with attempt:
                if failure is not None:
                    log.warning(
                        "Temporal not reachable yet; retrying",
                        attempt=attempt.num,
                        error=str(failure)[:300],
                    )
                try:
                    return await connect(**overrides)
                except RuntimeError as exc:
                    failure = exc
                    raise
    except RuntimeError as exc:
        raise ConnectionError(
            f"Temporal not reachable within {timeout_s:g}s: {exc}"
        ) from exc
    raise AssertionError("unreachable: stamina returns or raises")
