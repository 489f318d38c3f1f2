"""What every command line shares: argument types, the options several
commands take, and a fast exit."""

from __future__ import annotations

import argparse
import os
import sys

from actors.settings import default_shards
from runtime.logging import configure_logging
from wire.synthetic import WorkloadSpec

__all__ = [
    "add_connect_timeout_argument",
    "add_shards_argument",
    "add_workload_arguments",
    "configure_logging",
    "exit_now",
    "positive_int",
    "workload_from",
]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text}")
    return value


def exit_now(code: int = 0) -> None:
    """Exit without interpreter teardown, after flushing output.

    The Temporal client's native runtime keeps threads that can abort the
    interpreter while it finalizes ("PyGILState_Release ... must be current",
    sdk-python issue 300). A short-lived client command has nothing left to
    clean up once its output is flushed, so it skips the teardown.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def add_connect_timeout_argument(parser: argparse.ArgumentParser) -> None:
    """``--connect-timeout``: how long a command waits for Temporal at start."""
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=60.0,
        help="seconds to keep retrying while Temporal is unreachable at start "
        "(default %(default)s)",
    )


def add_shards_argument(parser: argparse.ArgumentParser) -> None:
    """``--shards``: the one setting every process must agree on."""
    parser.add_argument(
        "--shards",
        type=positive_int,
        default=default_shards(),
        help="shard count, the same for every process (env EVENTFLOW_SHARDS; "
        "default %(default)s)",
    )


def add_workload_arguments(
    group: argparse._ActionsContainer, *, tenants: int, jobs: int
) -> None:
    """The synthetic workload's options (see ``wire.synthetic.WorkloadSpec``)."""
    group.add_argument("--tenants", type=positive_int, default=tenants)
    group.add_argument("--jobs", type=positive_int, default=jobs)
    group.add_argument("--types", type=positive_int, default=3)
    group.add_argument("--parts", type=positive_int, default=2)
    group.add_argument("--duplicates", type=float, default=0.0)
    group.add_argument("--early", type=float, default=0.0)
    group.add_argument("--invalid", type=float, default=0.0)
    group.add_argument("--seed", type=int, default=1)
    group.add_argument(
        "--run",
        default=None,
        help="prefix for generated job ids, so that runs against one server "
        "never share a job",
    )


def workload_from(args: argparse.Namespace, *, run: str) -> WorkloadSpec:
    return WorkloadSpec(
        tenants=args.tenants,
        jobs=args.jobs,
        types=args.types,
        parts=args.parts,
        duplicates=args.duplicates,
        early=args.early,
        invalid=args.invalid,
        seed=args.seed,
        run=run,
    )
