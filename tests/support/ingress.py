"""``python -m script.ingress`` as a real subprocess (a pytest plugin).

Fixtures:
    ingress_process: starts ingress processes for one test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.polling import wait_for_process
from tests.support.processes import ROOT


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

        def listening() -> bool:
            for line in self.log.read_bytes().splitlines():
                if b'"ingress started"' in line:
                    self.url = "http://" + json.loads(line)["listening"][0]
            return bool(self.url)

        wait_for_process(
            self.process,
            listening,
            what="ingress",
            log=self.log.read_text,
            timeout_s=timeout,
        )

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
