"""Pytest plugin: a real PostgreSQL server, private to the test run
(``bench.postgres.PostgresServer``).

Fixtures:
    postgres_server: session-wide cluster (``initdb`` into a temp directory the
        ``postgres`` user owns, its own free port, its socket in that
        directory), stopped at the end of the session.
    postgres_url: a fresh database on it for one test
        (``postgresql://postgres@127.0.0.1:PORT/NAME``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.postgres import PostgresMissing, PostgresServer

__all__ = ["PostgresServer", "postgres_server", "postgres_url"]


def _started() -> PostgresServer:
    try:
        server = PostgresServer()
    except PostgresMissing as exc:
        pytest.fail(
            f"{exc} The SQL sink tests run against a real server.", pytrace=False
        )
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster for the whole test session."""
    server = _started()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session server, for one test."""
    return postgres_server.new_database()
