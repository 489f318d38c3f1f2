"""Pipelines: the pure function from a job's collected parts to its record.

A pipeline plays the part of a dbt model. It takes a ``JobSnapshot`` (the
job's ``job.opened`` event and every part collected per analysis type) and
returns the value of the result record's ``analyses`` field: any value
msgspec can encode as JSON. The record around it (ids, version, status,
counts, timestamps) is fixed by the system, so keys stay stable whatever the
pipeline does.

A pipeline must be deterministic: it runs in the publishing activity, and a
retried activity must produce the same record. Point the worker at your own
with ``--pipeline package.module:function``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import msgspec

from actors.rules.job import JobSnapshot

Pipeline = Callable[[JobSnapshot], Any]


def collected(snapshot: JobSnapshot) -> dict[str, Any]:
    """The default pipeline: every part's payload, in part order.

    ``{type: {"parts": n, "payloads": [payload 0 .. n-1]}}`` with ``null`` for
    a part that never arrived. A required type of which no part arrived has
    ``"parts": null`` and no payloads (only a timed-out result has either).
    Payloads are the producers' JSON, byte for byte.
    """
    types = snapshot.required if snapshot.required is not None else []
    types = types + [t for t in snapshot.slots if t not in types]
    analyses: dict[str, Any] = {}
    for analysis_type in types:
        slot = snapshot.slots.get(analysis_type)
        if slot is None:
            analyses[analysis_type] = {"parts": None, "payloads": []}
            continue
        analyses[analysis_type] = {
            "parts": slot.parts,
            "payloads": [
                None if event is None else msgspec.Raw(event.payload)
                for event in slot.events
            ],
        }
    return analyses


def part_counts(snapshot: JobSnapshot) -> dict[str, Any]:
    """A small example pipeline: received/expected parts per type, no payloads."""
    return {
        analysis_type: {"received": slot.filled, "parts": slot.parts}
        for analysis_type, slot in sorted(snapshot.slots.items())
    }


DEFAULT = "actors.pipelines:collected"


def import_ref(ref: str, *, what: str, shape: str) -> tuple[Any, str]:
    """The object ``module:attr`` names (None when the module lacks it), and
    the module's name.

    Raises:
        ValueError: ``ref`` is not ``module:attr``, or the module cannot be
            imported; the message names ``what`` it was for and ``shape``.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} must look like {shape!r}, got {ref!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{what} {ref!r}: cannot import {module_name}: {exc}") from exc
    return getattr(module, attr, None), module_name


def load_pipeline(ref: str) -> Pipeline:
    """Resolve ``module:attr`` to a callable, with a clear error if it is not one."""
    pipeline, module_name = import_ref(ref, what="pipeline", shape="module:function")
    if not callable(pipeline):
        raise ValueError(f"{ref!r} is not a callable in {module_name}")
    return pipeline
