"""Registers the shared fixtures (they live in tests/support, the one home of
test support) and marks each test with its tier by folder: tests under
tests/integration are ``integration``, under tests/faults ``faults``.
``make test-quick`` runs what is neither (nor ``slow``): unit, activity and
replay tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# Before the plugins are imported, so that their asserts are rewritten too.
pytest.register_assert_rewrite("tests.support")

pytest_plugins = [
    "tests.support.temporal",
    "tests.support.processes",
    "tests.support.redis",
    "tests.support.postgres",
    "tests.support.ingress",
    "tests.support.pubsub",
    "tests.support.codec",
    "tests.support.browser",
]

TESTS = Path(__file__).resolve().parent
TIERS = {TESTS / "integration": "integration", TESTS / "faults": "faults"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for folder, marker in TIERS.items():
            if item.path.is_relative_to(folder):
                item.add_marker(marker)
