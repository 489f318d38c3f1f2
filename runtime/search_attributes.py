"""The jobs' search attributes, registered before any worker runs.

A job is started with its tenant and status as search attributes
(``actors.names``), and a start naming an attribute the namespace does not
know is refused: every delivery would fail. So a worker makes sure they are
there before it polls: it adds what is missing where the server lets it (a
dev server, a self-hosted cluster), and otherwise refuses to start, saying
what to run.
"""

from __future__ import annotations

import structlog
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError

from actors import names

log = structlog.get_logger(__name__)

KEYWORD = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
REQUIRED = {names.TENANT_ATTRIBUTE: KEYWORD, names.STATUS_ATTRIBUTE: KEYWORD}


class SearchAttributesMissing(RuntimeError):
    """The namespace lacks the jobs' search attributes and they could not be
    added here; the message says how to add them."""


def how_to_register(namespace: str) -> str:
    return "; ".join(
        f"temporal operator search-attribute create --namespace {namespace} "
        f"--name {name} --type Keyword"
        for name in REQUIRED
    )


async def ensure_search_attributes(client: Client) -> None:
    """Add the jobs' search attributes to the client's namespace where they
    are missing.

    Raises:
        SearchAttributesMissing: one is missing, or has another type, and
            the server refused to add it (Temporal Cloud, or no permission).
    """
    namespace = client.namespace
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as exc:
        raise SearchAttributesMissing(
            f"cannot list the search attributes of namespace {namespace!r} "
            f"({exc.status.name}); make sure they exist: {how_to_register(namespace)}"
        ) from None
    known = {**listed.system_attributes, **listed.custom_attributes}
    wrong = [n for n, t in REQUIRED.items() if n in known and known[n] != t]
    if wrong:
        raise SearchAttributesMissing(
            f"search attributes {', '.join(wrong)} of namespace {namespace!r} "
            "are not of type Keyword; the jobs need them as Keyword"
        )
    missing = {n: t for n, t in REQUIRED.items() if n not in known}
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(search_attributes=missing, namespace=namespace)
        )
    except RPCError as exc:
        raise SearchAttributesMissing(
            f"namespace {namespace!r} lacks the search attributes "
            f"{', '.join(missing)} and adding them failed ({exc.status.name}: "
            f"{exc.message}); add them: {how_to_register(namespace)} (on "
            "Temporal Cloud: tcld namespace search-attributes add, or the UI)"
        ) from None
    log.info("search attributes added", namespace=namespace, names=sorted(missing))
