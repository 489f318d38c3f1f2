"""Registers the shared fixtures; they live in tests/support (one home for
test support: servers, processes, pollers, builders, readers)."""

from __future__ import annotations

import pytest

# Before the plugins are imported, so that their asserts are rewritten too.
pytest.register_assert_rewrite("tests.support")

pytest_plugins = [
    "tests.support.temporal",
    "tests.support.processes",
    "tests.support.redis",
    "tests.support.ingress",
]
