"""The codec server and a dev server whose web UI uses it (a pytest plugin).

Fixtures:
    codec_server: ``python -m script.codec`` as a real process on a free port.
    ui_dev_server: ``python -m script.devserver`` with its web UI on and the
        codec server it starts for the UI (both real processes, file-backed).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.polling import wait_for_process
from tests.support.ports import free_port, port_answers
from tests.support.processes import ROOT


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class CodecServer:
    """``python -m script.codec`` on a free port of 127.0.0.1."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.port = free_port()
        self.log = directory / "codec.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "script.codec",
                    "--port",
                    str(self.port),
                    *args,
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_process(
            self.process,
            lambda: port_answers(self.port),
            what="codec server",
            log=self.log.read_text,
            timeout_s=30,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        _stop(self.process)


@pytest.fixture
def codec_server(tmp_path: Path) -> Iterator[CodecServer]:
    server = CodecServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


class UiDevServer:
    """``python -m script.devserver`` with the web UI on (on the gRPC port +
    1000, as by default) and the codec server it starts for it."""

    def __init__(self, directory: Path) -> None:
        # A free gRPC port whose + 1000 is free too.
        while True:
            self.port = free_port()
            if self.port + 1000 < 65536 and not port_answers(self.port + 1000):
                break
        self.ui_port = self.port + 1000
        self.codec_port = free_port()
        self.log = directory / "devserver.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "script.devserver",
                    "--port",
                    str(self.port),
                    "--ui-port",
                    str(self.ui_port),
                    "--codec-port",
                    str(self.codec_port),
                    "--db",
                    str(directory / "temporal.db"),
                    "--log-level",
                    "error",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_process(
            self.process,
            lambda: all(
                port_answers(p) for p in (self.port, self.ui_port, self.codec_port)
            ),
            what="dev server with its UI and codec server",
            log=self.log.read_text,
            timeout_s=60,
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def stop(self) -> None:
        # The codec server ends with it (script.devserver sees to that).
        _stop(self.process)


@pytest.fixture
def ui_dev_server(tmp_path: Path) -> Iterator[UiDevServer]:
    server = UiDevServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()
