"""Fixtures for the HTTP ingress tests: ``python -m script.ingress`` as a real
subprocess, and a file-backed dev server that can be killed and restarted.

(A plugin registered in tests/conftest.py.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unused_address() -> str:
    """``127.0.0.1:PORT`` where nothing listens (a Temporal that is away)."""
    return f"127.0.0.1:{free_port()}"


class IngressProcess:
    """``python -m script.ingress`` on a free port, logging to a file."""

    def __init__(
        self, address: str, args: list[str], log: Path, env: dict[str, str]
    ) -> None:
        self.address = address
        self.args = args
        self.log = log
        self.env = env
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "TEMPORAL_ADDRESS": self.address, **self.env}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "script.ingress", "--port", "0", *self.args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not self.url:
            for line in self.log.read_bytes().splitlines():
                if b'"ingress started"' in line:
                    self.url = "http://" + json.loads(line)["listening"][0]
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ingress did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def send_signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_records(self) -> list[dict]:
        return [
            json.loads(line)
            for line in self.log.read_bytes().splitlines()
            if line.startswith(b"{")
        ]


@pytest.fixture
def ingress_process(tmp_path: Path) -> Iterator[type[IngressProcess]]:
    """Start ingress subprocesses with ``ingress_process(address, args, env)``;
    all are stopped at the end of the test."""
    started: list[IngressProcess] = []

    def start(
        address: str, args: list[str] | None = None, env: dict[str, str] | None = None
    ) -> IngressProcess:
        ingress = IngressProcess(
            address,
            args or [],
            tmp_path / f"ingress-{len(started)}.log",
            env or {},
        )
        started.append(ingress)
        ingress.start()
        return ingress

    yield start  # type: ignore[misc]
    for ingress in started:
        ingress.stop()


class FileDevServer:
    """``python -m script.devserver`` on a SQLite file: it can be SIGKILLed
    and restarted on the same port with its state intact."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.db = directory / "temporal.db"
        self.log = directory / "devserver.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as log:
            # script.devserver execs the temporal binary: this is its pid.
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "script.devserver",
                    "--headless",
                    "--port",
                    str(self.port),
                    "--db",
                    str(self.db),
                    "--log-level",
                    "error",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dev server did not start:\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def file_dev_server(tmp_path: Path) -> Iterator[FileDevServer]:
    """A running file-backed dev server (``kill()`` then ``start()`` to
    restart it); stopped at the end of the test."""
    server = FileDevServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
