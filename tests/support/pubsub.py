"""Google's Pub/Sub emulator: a real Pub/Sub client for the ingress (a pytest
plugin).

The emulator is Debian's ``google-cloud-cli-pubsub-emulator`` (Java). Its REST
API needs no client library: topics and subscriptions are PUT, messages are
POSTed to ``topics/T:publish``, and a push subscription POSTs every message to
its endpoint, again after about a second for as long as the endpoint answers
anything but 2xx.

Fixtures:
    pubsub_emulator: an emulator on a free port for one test (``PubSubEmulator``).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.support.polling import wait_for_process
from tests.support.ports import free_port

# Where the Debian package puts it (``dpkg -L google-cloud-cli-pubsub-emulator``).
EMULATOR = Path(
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
)
# The JVM takes a few seconds to start, more on a busy machine.
_STARTUP_TIMEOUT_S = 90.0
# For the readiness probe: never through a proxy from the environment.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def emulator_binary() -> str:
    """The emulator's start script: EVENTFLOW_PUBSUB_EMULATOR, then PATH, then
    where the Debian package installs it; the test fails when there is none."""
    for candidate in (
        os.environ.get("EVENTFLOW_PUBSUB_EMULATOR"),
        shutil.which("cloud-pubsub-emulator"),
        str(EMULATOR),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "Google's Pub/Sub emulator is not installed. The Pub/Sub tests push "
        "through a real emulator: install Debian's google-cloud-cli-pubsub-emulator "
        "(from Google's Cloud SDK apt repository; it needs Java), or point "
        "EVENTFLOW_PUBSUB_EMULATOR at its cloud-pubsub-emulator script.",
        pytrace=False,
    )


class PubSubEmulator:
    """``cloud-pubsub-emulator`` on 127.0.0.1, in ``directory``.

    Args:
        directory: Working directory (its log goes there).
        project: The project every topic and subscription belongs to.
    """

    def __init__(self, directory: Path, *, project: str = "eventflow-test") -> None:
        self.port = free_port()
        self.project = project
        self._directory = directory
        self._log_path = directory / f"pubsub-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The REST root: ``http://127.0.0.1:PORT/v1/projects/PROJECT``."""
        return f"http://127.0.0.1:{self.port}/v1/projects/{self.project}"

    def start(self) -> None:
        """Start the emulator and wait until its REST API answers."""
        self._directory.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log:
            # The script execs java; a session of its own lets stop() end
            # anything it starts, whatever the script does.
            self._process = subprocess.Popen(
                [emulator_binary(), "--host=127.0.0.1", f"--port={self.port}"],
                cwd=self._directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_process(
                self._process,
                self._answers,
                what=f"the Pub/Sub emulator on port {self.port}",
                log=self.log,
                timeout_s=_STARTUP_TIMEOUT_S,
                interval_s=0.2,
            )
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the emulator (SIGTERM to its session, then SIGKILL)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log(self) -> str:
        """The end of the emulator's log."""
        try:
            return self._log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def _answers(self) -> bool:
        try:
            with _direct.open(f"{self.url}/topics", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    # --- The REST API -------------------------------------------------------

    async def _call(self, method: str, path: str, body: Any) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method,
                f"{self.url}/{path}",
                data=msgspec.json.encode(body),
                # Without it the emulator's HTTP adapter finds no method (404).
                headers={"Content-Type": "application/json"},
            ) as response,
        ):
            text = await response.read()
            if response.status != 200:
                answer = text.decode(errors="replace")
                raise RuntimeError(f"{method} {path}: {response.status} {answer}")
            return msgspec.json.decode(text)

    async def create_topic(self, topic: str) -> str:
        """Create ``topic``; returns its full name."""
        created = await self._call("PUT", f"topics/{topic}", {})
        return created["name"]

    async def create_push_subscription(
        self, subscription: str, topic: str, endpoint: str, *, ack_deadline_s: int = 10
    ) -> str:
        """Create a subscription to ``topic`` that pushes to ``endpoint``;
        returns its full name."""
        created = await self._call(
            "PUT",
            f"subscriptions/{subscription}",
            {
                "topic": f"projects/{self.project}/topics/{topic}",
                "pushConfig": {"pushEndpoint": endpoint},
                "ackDeadlineSeconds": ack_deadline_s,
            },
        )
        return created["name"]

    async def publish(
        self,
        topic: str,
        messages: Sequence[tuple[bytes, Mapping[str, str]]],
        *,
        chunk: int = 500,
    ) -> list[str]:
        """Publish ``(data, attributes)`` messages in order, ``chunk`` to a
        request; returns their message ids, in the same order."""
        ids: list[str] = []
        for start in range(0, len(messages), chunk):
            body = {
                "messages": [
                    {"data": base64.b64encode(data).decode(), "attributes": dict(attrs)}
                    for data, attrs in messages[start : start + chunk]
                ]
            }
            published = await self._call("POST", f"topics/{topic}:publish", body)
            ids += published["messageIds"]
        return ids


@pytest.fixture
def pubsub_emulator(tmp_path: Path) -> Iterator[PubSubEmulator]:
    """A running Pub/Sub emulator for one test; stopped when the test ends."""
    emulator = PubSubEmulator(tmp_path / "pubsub")
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
