"""Fixtures for the fault scenarios (file-backed dev server, ingress)."""

from tests.ingress_fixtures import file_dev_server, ingress_process  # noqa: F401
