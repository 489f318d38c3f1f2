"""A private PostgreSQL server: ``initdb`` into a temporary directory, its
own free port, its socket in that directory, trust authentication on
127.0.0.1. The benchmark's SQL sink runs use one (durable, as a user's
server would be), and so do the tests (``tests/support/postgres.py``).

PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` system user through ``runuser``.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_STARTUP_TIMEOUT_S = 30.0
_USER = "postgres"


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def postgres_bin() -> Path:
    """The directory holding PostgreSQL's server binaries (newest version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise PostgresMissing(
            "PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/"
            "postgres). `make test` and `make bench` install it "
            "(apt-get install -y postgresql)."
        )
    return Path(found[-1]).parent


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", _USER, "--", *args] if os.geteuid() == 0 else args


class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1 (trust authentication).

    ``durable`` keeps PostgreSQL's own durability settings, for a server that
    is stopped and started again (``halt``, ``start``) and must still hold
    every committed row; otherwise it runs without fsync, as a throwaway.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.bin = postgres_bin()
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="eventflow-pg-"))
        self.data = self.directory / "data"
        self._log_path = self.directory / "postgres.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count()

    @property
    def pid(self) -> int | None:
        """The process the server runs under (``runuser`` as root), whose
        children are the postmaster and its backends."""
        return None if self._process is None else self._process.pid

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Initialise the cluster (the first time) and start the server."""
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        self._run()

    def _initdb(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, _USER, _USER)
        subprocess.run(
            _as_postgres(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-A",
                    "trust",
                    "-U",
                    _USER,
                    "--no-sync",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def _run(self) -> None:
        throwaway = [
            # A throwaway cluster: durability buys nothing here.
            *("-c", "fsync=off"),
            *("-c", "synchronous_commit=off"),
            *("-c", "full_page_writes=off"),
        ]
        log = self._log_path.open("ab")
        if os.geteuid() == 0:
            shutil.chown(self._log_path, _USER, _USER)
        self._process = subprocess.Popen(
            _as_postgres(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.directory),
                    "-h",
                    "127.0.0.1",
                    *([] if self.durable else throwaway),
                ]
            ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not self._ready():
            failed = self._process.poll() is not None
            if failed or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"PostgreSQL on port {self.port} "
                    + ("exited" if failed else "did not start")
                    + f":\n{self._log()}"
                )
            time.sleep(0.05)

    def _ready(self) -> bool:
        done = subprocess.run(
            [
                str(self.bin / "pg_isready"),
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            check=False,
        )
        return done.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with ``psql`` (as the superuser); returns its output."""
        done = subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.url(database),
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"db_{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and remove the cluster."""
        self.halt()
        shutil.rmtree(self.directory, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server at once, as a crash would (``pg_ctl stop -m
        immediate``: no shutdown checkpoint; ``start`` recovers from the
        write-ahead log), keeping its data."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            subprocess.run(
                _as_postgres(
                    [
                        str(self.bin / "pg_ctl"),
                        "stop",
                        "-D",
                        str(self.data),
                        "-m",
                        "immediate",
                        "-s",
                    ]
                ),
                check=False,
            )
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _log(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
