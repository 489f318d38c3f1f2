"""Secrets and access: a Redis that wants a password, Redis over TLS, the
Temporal connection's TLS and API key from the environment, and logs that
never show a secret or an event's payload.

* A Redis password goes in the sink URL: ``redis://:PW@host:port/db`` (the
  password percent-encoded), or ``?password=PW``. Give the URL through
  ``EVENTFLOW_SINK`` rather than ``--sink``: a command line is visible to
  every local user in the process list.
* TLS: ``rediss://...``; the CA that signed the server's certificate comes in
  the URL as ``?ssl_ca_certs=/path/ca.pem`` (redis-py hands any query argument
  to the connection), and a client certificate, for a server that asks for
  one, as ``&ssl_certfile=...&ssl_keyfile=...``.
* Temporal: the SDK's environment configuration (TEMPORAL_ADDRESS,
  TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS, TEMPORAL_TLS_*...).

Certificates are made here with the ``openssl`` command (the ``cryptography``
package is not among the project's dependencies).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
import pytest
import redis
from temporalio.client import Client
from temporalio.service import TLSConfig

from runtime.client import connect
from sinks import RedisStreamSink, SinkRecord
from tests.support.audit import audit
from tests.support.events import push_envelope
from tests.support.polling import wait_for_process
from tests.support.ports import free_port
from tests.support.processes import run_script
from tests.support.records import redis_progress, redis_records
from wire import DATA_CONVERTER
from wire.records import DeadLetter
from wire.synthetic import ANALYSIS_TYPES, Expected

SHARDS = 4
AT = "2026-01-01T00:00:00Z"
TYPES = list(ANALYSIS_TYPES[:2])
PARTS = 2
# With characters that a URL's authority cannot hold unencoded.
PASSWORD = f"pw/{secrets.token_hex(8)}@:#%"
API_KEY = f"api-key-{secrets.token_hex(12)}"
TOKEN = f"ingress-token-{secrets.token_hex(12)}"


def quoted(password: str) -> str:
    return quote(password, safe="")


# --- Certificates and a TLS redis-server -----------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path) -> Certificates:
    """A throwaway CA, and a server (127.0.0.1, localhost) and a client
    certificate it signed."""
    directory.mkdir(parents=True, exist_ok=True)
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command makes the test certificates"

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(
        *["req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2"],
        *["-subj", "/CN=eventflow test CA"],
        *["-addext", "basicConstraints=critical,CA:TRUE"],
        *["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    )
    for name, usage, names in (
        ("server", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"),
        ("client", "clientAuth", ""),
    ):
        run(
            *["req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr"],
            *["-subj", f"/CN=eventflow test {name}"],
        )
        (directory / f"{name}.ext").write_text(
            names + "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            f"extendedKeyUsage={usage}\n"
        )
        run(
            *["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt"],
            *["-CAkey", "ca.key", "-CAcreateserial", "-days", "2"],
            *["-out", f"{name}.crt", "-extfile", f"{name}.ext"],
        )
    return Certificates(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


class TLSRedis:
    """``redis-server`` listening only on a TLS port, with a password."""

    def __init__(
        self, directory: Path, certs: Certificates, *, client_certs: bool = False
    ) -> None:
        self.port = free_port()
        self.certs = certs
        self.client_certs = client_certs
        self.log = directory / f"redis-tls-{self.port}.log"
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not on PATH (make test installs it)"
        self.process = subprocess.Popen(
            [
                binary,
                *["--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1"],
                *["--tls-cert-file", str(certs.server_cert)],
                *["--tls-key-file", str(certs.server_key)],
                *["--tls-ca-cert-file", str(certs.ca)],
                *["--tls-auth-clients", "yes" if client_certs else "no"],
                *["--requirepass", PASSWORD, "--save", "", "--appendonly", "no"],
                *["--dir", str(directory), "--logfile", str(self.log)],
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        self._wait_ready()

    def url(self, *, ca: bool = True, client: bool | None = None) -> str:
        """``rediss://:PW@127.0.0.1:PORT/0`` with the CA (and the client
        certificate, by default when the server asks for one) in the query."""
        query = []
        if ca:
            query.append(f"ssl_ca_certs={self.certs.ca}")
        if self.client_certs if client is None else client:
            query.append(f"ssl_certfile={self.certs.client_cert}")
            query.append(f"ssl_keyfile={self.certs.client_key}")
        return f"rediss://:{quoted(PASSWORD)}@127.0.0.1:{self.port}/0?" + "&".join(
            query
        )

    def _wait_ready(self) -> None:
        def answers() -> bool:
            try:
                with redis.Redis.from_url(self.url()) as client:
                    return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_for_process(
            self.process,
            answers,
            what="redis-server (TLS)",
            log=self.log.read_text,
            timeout_s=15,
            interval_s=0.05,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


@pytest.fixture
def tls_redis(tmp_path: Path, certificates: Certificates) -> Iterator[TLSRedis]:
    server = TLSRedis(tmp_path, certificates)
    try:
        yield server
    finally:
        server.stop()


# --- A workload with a recognisable marker in every payload ----------------------


def marked_jobs(run: str, jobs: int, marker: str) -> tuple[list[bytes], Expected]:
    """Complete jobs whose every payload carries ``marker``."""
    expected = Expected()
    lines = []
    for j in range(jobs):
        tenant, job = f"tenant-{j % 3}", f"job-{run}{j:04d}"
        key = f"{tenant}/{job}"
        ids = {"tenant_id": tenant, "job_id": job}
        lines.append(
            msgspec.json.encode(
                {
                    "type": "job.opened",
                    "event_id": f"{run}{j}-opened",
                    **ids,
                    "required": TYPES,
                    "at": AT,
                }
            )
        )
        expected.payloads[key] = {}
        for analysis_type in TYPES:
            payloads = []
            for part in range(PARTS):
                payload = msgspec.json.encode(
                    {"note": f"{marker} {analysis_type} {part}", "score": 0.5}
                )
                payloads.append(payload)
                lines.append(
                    msgspec.json.encode(
                        {
                            "type": "analysis.result",
                            "event_id": f"{run}{j}-{analysis_type}-{part}",
                            **ids,
                            "analysis_type": analysis_type,
                            "part": part,
                            "parts": PARTS,
                            "payload": msgspec.Raw(payload),
                            "at": AT,
                        }
                    )
                )
            expected.payloads[key][analysis_type] = payloads
    return lines, expected


def marked_bad_inputs(marker: str, tag: str) -> list[bytes]:
    """Invalid inputs that carry the marker, one where the refusal's reason
    quotes it (an unknown type)."""
    event = {
        "type": "analysis.result",
        "event_id": f"bad-{tag}-{marker}",
        "tenant_id": "tenant-0",
        "job_id": "job-bad",
        "analysis_type": TYPES[0],
        "part": 5,
        "parts": PARTS,
        "payload": {"note": marker},
        "at": AT,
    }
    return [
        msgspec.json.encode(event),  # part outside 0..parts-1
        msgspec.json.encode({**event, "type": f"unknown {marker}"}),
        msgspec.json.encode({**event, "part": marker}),
        f"not json at all {tag} {marker}".encode(),
        f'{{"type": "job.opened", "note": "{tag} {marker}", '.encode(),
    ]


push = functools.partial(push_envelope, subscription="projects/p/subscriptions/s")


# --- Reading logs ------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class LogLine:
    source: str
    level: str  # "debug", "info"...; "text" for lines that are not structlog's
    text: str


def log_lines(source: str, data: bytes) -> list[LogLine]:
    lines = []
    for raw in data.decode(errors="replace").splitlines():
        text = _ANSI.sub("", raw)
        level = "text"
        if text.startswith("{"):
            with contextlib.suppress(ValueError):
                level = str(json.loads(text).get("level", "text"))
        lines.append(LogLine(source, level, text))
    return lines


def leaks(lines: list[LogLine], secrets: list[str], payload_marker: str) -> list[str]:
    """Lines that show a secret (at any level), or a payload above debug."""
    found = []
    for line in lines:
        shown = [s for s in secrets if s in line.text]
        if payload_marker in line.text and line.level != "debug":
            shown.append("the payload marker")
        if shown:
            found.append(
                f"{line.source} [{line.level}] shows {shown}: {line.text[:300]}"
            )
    return found


# --- 1. A Redis that requires a password -------------------------------------------


@pytest.mark.parametrize("form", ["authority", "query"])
async def test_redis_sink_with_a_password_writes_and_never_logs_it(
    file_dev_server,
    worker_process,
    start_redis,
    tmp_path: Path,
    monkeypatch,
    form: str,
) -> None:
    server = start_redis(password=PASSWORD)
    url = f"redis://:{quoted(PASSWORD)}@127.0.0.1:{server.port}/0"
    # The password as a query parameter works as well (redis-py reads it).
    query_url = f"redis://127.0.0.1:{server.port}/0?password={quoted(PASSWORD)}"
    marker = f"marker-{secrets.token_hex(6)}"
    lines, expected = marked_jobs("pw-", 12, marker)
    monkeypatch.setenv("EVENTFLOW_SINK", url if form == "authority" else query_url)
    address = file_dev_server.address
    worker = worker_process(
        address, ["--shards", str(SHARDS), "--summary-interval", "1"]
    )
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    emitted = await asyncio.to_thread(
        run_script,
        "script.emit",
        "--file",
        str(events),
        "--shards",
        str(SHARDS),
        address=address,
    )

    deadline = time.monotonic() + 120
    while (await redis_progress(url)).jobs_completed < len(expected.payloads):
        assert time.monotonic() < deadline, "results did not land in Redis"
        await asyncio.sleep(0.25)
    await asyncio.sleep(2)
    result = audit(await redis_records(url), expected)
    assert result.clean, result.problems()

    # Without the password, or with a wrong one, Redis refuses (so the sink
    # really did authenticate), and the error does not show the password.
    for bad in (
        f"redis://127.0.0.1:{server.port}/0",
        f"redis://:wrong-{secrets.token_hex(4)}@127.0.0.1:{server.port}/0",
    ):
        sink = RedisStreamSink(bad)
        with pytest.raises(redis.exceptions.AuthenticationError) as refused:
            await sink.write([record(1)])
        await sink.close()
        assert PASSWORD not in str(refused.value)

    worker.stop()
    logs = log_lines("worker", worker.log.read_bytes()) + log_lines(
        "emit", emitted.stderr
    )
    assert not leaks(logs, [PASSWORD, quoted(PASSWORD)], marker)
    started = [line for line in logs if "worker started" in line.text]
    assert started, "the worker logs its (redacted) sink"
    redacted = {
        "authority": f"redis://:***@127.0.0.1:{server.port}/0",
        "query": f"redis://127.0.0.1:{server.port}/0?password=***",
    }
    assert f'"sink": "{redacted[form]}"' in started[0].text


# --- 2. rediss:// with the CA in the URL --------------------------------------------


async def test_redis_sink_over_tls_with_the_ca_in_the_url(
    file_dev_server, worker_process, tls_redis: TLSRedis, tmp_path: Path, monkeypatch
) -> None:
    url = tls_redis.url()
    marker = f"marker-{secrets.token_hex(6)}"
    lines, expected = marked_jobs("tls-", 12, marker)
    monkeypatch.setenv("EVENTFLOW_SINK", url)
    address = file_dev_server.address
    worker = worker_process(
        address, ["--shards", str(SHARDS), "--summary-interval", "1"]
    )
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    await asyncio.to_thread(
        run_script,
        "script.emit",
        "--file",
        str(events),
        "--shards",
        str(SHARDS),
        address=address,
    )
    deadline = time.monotonic() + 120
    while (await redis_progress(url)).jobs_completed < len(expected.payloads):
        assert time.monotonic() < deadline, "results did not land in Redis over TLS"
        await asyncio.sleep(0.25)
    await asyncio.sleep(2)
    result = audit(await redis_records(url), expected)
    assert result.clean, result.problems()
    worker.stop()
    log = log_lines("worker", worker.log.read_bytes())
    assert not leaks(log, [PASSWORD, quoted(PASSWORD)], marker)
    opened = [line.text for line in log if "redis sink opened" in line.text]
    assert opened, "the sink logs where it writes"
    assert f"rediss://:***@127.0.0.1:{tls_redis.port}/0?ssl_ca_certs=" in opened[0]

    # The certificate is really checked: without the CA the write fails.
    sink = RedisStreamSink(tls_redis.url(ca=False))
    with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY"):
        await sink.write([record(1)])
    await sink.close()


def record(n: int) -> SinkRecord:
    return SinkRecord.of(
        DeadLetter(
            dead_letter_id=f"tls-{n}", reason="test", source="edge", raw="x", at=AT
        )
    )


async def test_redis_sink_presents_a_client_certificate_from_the_url(
    tmp_path: Path, certificates: Certificates
) -> None:
    server = TLSRedis(tmp_path, certificates, client_certs=True)
    try:
        sink = RedisStreamSink(server.url())
        assert await sink.write([record(1), record(2)]) == 2
        await sink.close()
        anonymous = RedisStreamSink(server.url(client=False))
        with pytest.raises(redis.exceptions.ConnectionError):
            await anonymous.write([record(3)])
        await anonymous.close()
    finally:
        server.stop()


# --- 3. No secret and no payload in any log line above debug -----------------------


async def test_no_secret_or_payload_in_the_logs_of_worker_emitter_and_ingress(
    file_dev_server,
    worker_process,
    ingress_process,
    tls_redis: TLSRedis,
    tmp_path: Path,
    monkeypatch,
) -> None:
    """Everything at debug level, with every secret in use at once: the Redis
    password (TLS sink), the ingress token, a Temporal API key."""
    url = tls_redis.url()
    marker = f"marker-{secrets.token_hex(6)}"
    emit_lines, emit_expected = marked_jobs("log-e-", 10, marker)
    http_lines, http_expected = marked_jobs("log-h-", 10, marker)
    emit_bad = marked_bad_inputs(marker, "emit")
    bad = marked_bad_inputs(marker, "http")
    expected = Expected(
        payloads={**emit_expected.payloads, **http_expected.payloads},
        dead_letters=len(emit_bad) + len(bad),
    )
    # Every process gets the secrets the way operators give them.
    monkeypatch.setenv("EVENTFLOW_SINK", url)
    monkeypatch.setenv("TEMPORAL_API_KEY", API_KEY)
    monkeypatch.setenv("TEMPORAL_TLS", "false")  # the dev server speaks plaintext
    monkeypatch.setenv("EVENTFLOW_LOG_LEVEL", "debug")
    address = file_dev_server.address
    worker = worker_process(
        address, ["--shards", str(SHARDS), "--summary-interval", "1"]
    )
    ingress = ingress_process(
        address, ["--shards", str(SHARDS)], env={"EVENTFLOW_INGRESS_TOKEN": TOKEN}
    )
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(emit_lines + emit_bad) + b"\n")
    emitted = await asyncio.to_thread(
        run_script,
        "script.emit",
        "--file",
        str(events),
        "--shards",
        str(SHARDS),
        "--json",
        address=address,
    )
    assert msgspec.json.decode(emitted.stdout)["rejected"] == len(emit_bad)

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:

        async def post(path: str, body: bytes, **kwargs: Any) -> int:
            async with session.post(ingress.url + path, data=body, **kwargs) as r:
                await r.read()
                return r.status

        # Without the token, and with a wrong one: refused.
        assert await post("/pubsub/push", push(http_lines[0], "m-0")) == 401
        assert (
            await post(f"/pubsub/push?token=x{TOKEN}", push(http_lines[0], "m-0"))
            == 403
        )
        half = len(http_lines) // 2
        for n, line in enumerate(http_lines[:half]):
            # Attributes that disagree with the event are logged by name only.
            body = push(line, f"m-{n}", {"tenant_id": f"other-{marker}"})
            assert await post(f"/pubsub/push?token={TOKEN}", body) == 200
        body = b"\n".join(http_lines[half:])
        ndjson = {"Content-Type": "application/x-ndjson", **bearer}
        assert await post("/events", body, headers=ndjson) == 200
        for n, line in enumerate(bad[:3]):
            body = push(line, f"m-bad-{n}")
            assert await post("/pubsub/push", body, headers=bearer) == 200
        assert await post("/events", b"\n".join(bad[3:]), headers=ndjson) == 400

    deadline = time.monotonic() + 120
    while True:
        progress = await redis_progress(url)
        if (
            progress.jobs_completed >= len(expected.payloads)
            and progress.dead_letters >= expected.dead_letters
        ):
            break
        assert time.monotonic() < deadline, f"not everything landed: {progress}"
        await asyncio.sleep(0.25)
    await asyncio.sleep(2)
    records = await redis_records(url)
    result = audit(records, expected)
    assert result.clean, result.problems()

    ingress.stop()
    worker.stop()
    logs = (
        log_lines("worker", worker.log.read_bytes())
        + log_lines("ingress", ingress.log.read_bytes())
        + log_lines("emit", emitted.stderr)
    )
    found = leaks(logs, [PASSWORD, quoted(PASSWORD), TOKEN, API_KEY], marker)
    assert not found, "\n".join(found[:10])
    # The check can see what it looks for: at debug level a dead letter's
    # reason (which quotes the unknown type) is logged, payload marker and all.
    assert any(line.level == "debug" and marker in line.text for line in logs)
    assert any("request" in line.text for line in logs if line.source == "ingress")


# --- 4. The Temporal connection's TLS and API key come from the environment ------


@pytest.fixture
def temporal_environment(tmp_path: Path, monkeypatch) -> Path:
    """An environment with no Temporal settings but an empty config file."""
    for name in [n for n in os.environ if n.startswith("TEMPORAL_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "temporal.toml"
    config.write_text("")
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
    return tmp_path


@pytest.fixture
def connect_calls(monkeypatch) -> list[dict[str, Any]]:
    """What ``runtime.client.connect`` passes to ``Client.connect`` (which
    does not connect here)."""
    calls: list[dict[str, Any]] = []

    async def fake_connect(**kwargs: Any) -> str:
        calls.append(kwargs)
        return "client"

    monkeypatch.setattr(Client, "connect", fake_connect)
    return calls


async def test_connect_takes_api_key_and_tls_files_from_the_environment(
    temporal_environment: Path,
    connect_calls: list[dict[str, Any]],
    certificates: Certificates,
    monkeypatch,
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", "eventflow.tmprl.cloud:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "eventflow.a1b2c")
    monkeypatch.setenv("TEMPORAL_API_KEY", API_KEY)
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(certificates.ca))
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "temporal.internal")
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(certificates.client_cert))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(certificates.client_key))

    assert await connect() == "client"
    [call] = connect_calls
    assert call["target_host"] == "eventflow.tmprl.cloud:7233"
    assert call["namespace"] == "eventflow.a1b2c"
    assert call["api_key"] == API_KEY
    assert call["data_converter"] is DATA_CONVERTER
    tls = call["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.domain == "temporal.internal"
    assert tls.server_root_ca_cert == certificates.ca.read_bytes()
    assert tls.client_cert == certificates.client_cert.read_bytes()
    assert tls.client_private_key == certificates.client_key.read_bytes()


async def test_connect_with_an_api_key_alone_uses_tls_unless_turned_off(
    temporal_environment: Path, connect_calls: list[dict[str, Any]], monkeypatch
) -> None:
    await connect()
    monkeypatch.setenv("TEMPORAL_API_KEY", API_KEY)
    await connect(lazy=True)
    monkeypatch.setenv("TEMPORAL_TLS", "false")
    await connect()
    default, with_key, plaintext = connect_calls
    assert default["target_host"] == "localhost:7233"
    assert "api_key" not in default
    assert not default.get("tls")
    assert (with_key["api_key"], with_key["tls"], with_key["lazy"]) == (
        API_KEY,
        True,
        True,
    )
    assert (plaintext["api_key"], plaintext["tls"]) == (API_KEY, False)


async def test_a_failed_connection_shows_no_api_key(
    ingress_process, tmp_path: Path, monkeypatch
) -> None:
    """Temporal unreachable: the worker and the emitter fail, the ingress
    answers 503, and none of them shows the API key."""
    unreachable = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("TEMPORAL_API_KEY", API_KEY)
    monkeypatch.setenv("TEMPORAL_TLS", "false")
    outputs = []
    # A short wait for the server: what is checked is the failure's output.
    for module, args in (
        ("script.worker", ["--sink", f"file:{tmp_path}/out", "--connect-timeout", "3"]),
        ("script.emit", ["--generate", "--jobs", "1", "--connect-timeout", "3"]),
    ):
        with pytest.raises(subprocess.CalledProcessError) as failed:
            await asyncio.to_thread(
                run_script, module, *args, address=unreachable, timeout=120
            )
        outputs += log_lines(module, failed.value.stdout + failed.value.stderr)
    assert any("Failed client connect" in line.text for line in outputs)
    ingress = ingress_process(unreachable, ["--ack-timeout", "1"])
    async with aiohttp.ClientSession() as session:
        async with session.get(ingress.url + "/readyz") as response:
            assert response.status == 503
        body = push(b'{"type": "job.opened"}', "m-1")
        async with session.post(ingress.url + "/pubsub/push", data=body) as response:
            assert response.status == 503
    ingress.stop()
    outputs += log_lines("ingress", ingress.log.read_bytes())
    assert not leaks(outputs, [API_KEY], payload_marker="\0never")
