"""Ask the system why: ``python -m script.inspect job|tenant|shards``.

    job TENANT JOB   status, version, required types, parts received and
                     missing per type, events, refusals, deadline, when it
                     closes, and what its proxy still holds for it
    tenant TENANT    the current window's counts
    shards           held events, the oldest one's age and deliveries in
                     flight, per shard
    sinks            the sinks of a fan-out that are behind (were down
                     while the others took records), from their catch-up
                     workflows: records waiting, the oldest's age, the error
    stuck --older-than AGE [--tenant T]
                     open jobs older than AGE (90s, 10m, 2h) that still miss
                     parts, with what they miss (a visibility query over the
                     jobs' search attributes)

Answers come from workflow queries, so a worker must be running. ``--json``
prints the answer as JSON. An unknown job or tenant exits 1 with a message.
Connection settings come from the SDK's standard environment variables
(TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*...).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

import msgspec

from runtime.cli import ClientSettings, configure_logging, exit_now
from runtime.client import connect_within
from runtime.inspect import (
    InspectError,
    job_report,
    parse_age,
    render_job,
    render_shards,
    render_sinks,
    render_stuck,
    render_tenant,
    shard_reports,
    sinks_behind,
    stuck_jobs,
    tenant_report,
)
from runtime.settings import add_options, from_args, positive_int


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ClientSettings, argparse.Namespace]:
    common = argparse.ArgumentParser(add_help=False)
    add_options(common, ClientSettings)
    common.add_argument("--json", action="store_true", help="print JSON")
    p = argparse.ArgumentParser(
        prog="python -m script.inspect",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = p.add_subparsers(dest="command", required=True)
    job = commands.add_parser("job", parents=[common], help="one job")
    job.add_argument("tenant_id")
    job.add_argument("job_id")
    tenant = commands.add_parser("tenant", parents=[common], help="one tenant")
    tenant.add_argument("tenant_id")
    commands.add_parser("shards", parents=[common], help="every shard's proxy")
    commands.add_parser("sinks", parents=[common], help="sinks that are behind")
    stuck = commands.add_parser("stuck", parents=[common], help="old open jobs")
    stuck.add_argument(
        "--older-than", type=parse_age, default=parse_age("10m"), metavar="AGE"
    )
    stuck.add_argument("--tenant", default=None, help="only this tenant's jobs")
    stuck.add_argument(
        "--limit", type=positive_int, default=100, help="at most this many jobs"
    )
    args = p.parse_args(argv)
    return from_args(ClientSettings, args, parser=p), args


async def main(settings: ClientSettings, args: argparse.Namespace) -> str:
    """The answer, as text or JSON. Raises InspectError when there is none."""
    client = await connect_within(settings.connect_timeout)
    now = datetime.now(UTC)
    if args.command == "job":
        report = await job_report(
            client, args.tenant_id, args.job_id, shards=settings.shards
        )
        text = render_job(report, now)
    elif args.command == "tenant":
        report = await tenant_report(client, args.tenant_id)
        text = render_tenant(report, now)
    elif args.command == "stuck":
        report = await stuck_jobs(
            client,
            older_than=args.older_than,
            now=now,
            tenant=args.tenant,
            limit=args.limit,
        )
        text = render_stuck(report, args.older_than, now)
    elif args.command == "sinks":
        report = await sinks_behind(client)
        text = render_sinks(report, now)
    else:
        report = await shard_reports(client, settings.shards)
        text = render_shards(report, now)
    return msgspec.json.encode(report).decode() if args.json else text


if __name__ == "__main__":
    settings, args = parse_args()
    configure_logging(settings.log_level)
    try:
        output = asyncio.run(main(settings, args))
    except (InspectError, ConnectionError) as exc:
        print(f"inspect: {exc}", file=sys.stderr)
        exit_now(1)
    sys.stdout.write(output + "\n")
    exit_now(0)
