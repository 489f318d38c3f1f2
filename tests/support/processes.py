"""The project's scripts as real subprocesses (a pytest plugin).

Fixtures:
    worker_process: starts ``python -m script.worker`` processes for one test.

Also: ``run_script`` (a script run to completion) and ``Emitter``
(``python -m script.emit`` in the background).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from tests.support.polling import wait_for_process

# The project's root: the scripts run from there.
ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """``python -m script.worker`` as a real subprocess."""

    def __init__(self, address: str, args: list[str], log: Path) -> None:
        self.address = address
        self.args = args
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "TEMPORAL_ADDRESS": self.address}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "script.worker", *self.args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_process(
            self.process,
            lambda: b"worker started" in self.log.read_bytes(),
            what="worker",
            log=self.log.read_text,
            timeout_s=timeout,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[type[WorkerProcess]]:
    """Start worker subprocesses with ``worker_process(address, args)``; all
    are stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def start(address: str, args: list[str]) -> WorkerProcess:
        worker = WorkerProcess(address, args, tmp_path / f"worker-{len(started)}.log")
        worker.start()
        started.append(worker)
        return worker

    yield start  # type: ignore[misc]
    for worker in started:
        worker.stop()


def run_script(
    module: str,
    *args: str,
    address: str,
    stdin: bytes | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m module args`` to completion against ``address``."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**os.environ, "TEMPORAL_ADDRESS": address},
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=True,
    )


class Emitter:
    """``python -m script.emit --file F --json`` running in the background."""

    def __init__(self, address: str, events: Path, *args: str) -> None:
        # Its log goes to a file: a pipe read only at the end could fill up
        # (emit logs every pushed-back batch) and stall it.
        self.log = events.with_suffix(".emit.log")
        command = [sys.executable, "-m", "script.emit", "--file", str(events)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--json", *args],
                cwd=ROOT,
                env={**os.environ, "TEMPORAL_ADDRESS": address},
                stdout=subprocess.PIPE,
                stderr=log,
            )

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float = 600) -> dict:
        """The emitter's JSON summary, once it has sent everything."""
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Not left running to load the tests after this one.
            self.process.kill()
            self.process.communicate()
            log = self.log.read_text(errors="replace")[-4000:]
            raise RuntimeError(
                f"emit still running after {timeout:g}s:\n{log}"
            ) from None
        if self.process.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"emit failed ({self.process.returncode}):\n{log}")
        return msgspec.json.decode(out)
