"""Pytest plugin: a real ``redis-server`` for the tests.

Fixtures:
    redis_server: session-wide server on a free port (``.url``, ``.port``,
        ``stop()``, ``start()`` for fault injection).
    redis_url: the same server, flushed, for one test.

    start_redis: starts extra servers for one test (e.g. with a password).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.polling import wait_for_process
from tests.support.ports import free_port

_STARTUP_TIMEOUT_S = 10.0


def _redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not on PATH. The Redis tests run against a real server: "
            "run `make test`, which installs it (apt-get install -y redis-server).",
            pytrace=False,
        )
    return binary


class RedisServer:
    """A ``redis-server`` subprocess bound to 127.0.0.1.

    Args:
        directory: Working directory for the server (its log goes there).
        port: Port to listen on; a free one when None.
        password: Require this password (``--requirepass``).
        extra_args: More ``redis-server`` arguments.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self._directory = directory
        self._extra_args = list(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = directory / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def client(self) -> redis.Redis:
        """A new synchronous client for setup and assertions."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def start(self) -> None:
        """Start the server (on the same port after a stop) and wait for PING."""
        if self.running:
            return
        self._directory.mkdir(parents=True, exist_ok=True)
        args = [
            _redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._directory),
            "--logfile",
            str(self._log_path),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        args += self._extra_args
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        self._wait_ready()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_ready(self) -> None:
        assert self._process is not None
        client = self.client()

        def answers() -> bool:
            # BusyLoadingError is a ConnectionError: not ready yet either way.
            with contextlib.suppress(redis.exceptions.ConnectionError):
                return bool(client.ping())
            return False

        try:
            wait_for_process(
                self._process,
                answers,
                what=f"redis-server on port {self.port}",
                log=self._log,
                timeout_s=_STARTUP_TIMEOUT_S,
                interval_s=0.01,
            )
        except RuntimeError:
            self.stop()
            raise
        finally:
            client.close()

    def _log(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


def start_redis_server(
    directory: Path,
    *,
    port: int | None = None,
    password: str | None = None,
    extra_args: Sequence[str] = (),
) -> RedisServer:
    """Start another server (arguments as for ``RedisServer``); stop it when done."""
    server = RedisServer(directory, port=port, password=password, extra_args=extra_args)
    server.start()
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the whole test session."""
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start extra servers for one test: ``start_redis(password="pw")``.

    They all stop when the test ends.
    """
    started: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        server = start_redis_server(tmp_path / f"redis-{len(started)}", **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, emptied (FLUSHALL) for this test.

    Restarts the server first if an earlier test stopped it.
    """
    redis_server.start()
    client = redis_server.client()
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url
