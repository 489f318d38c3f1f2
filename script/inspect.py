"""Ask the system why: ``python -m script.inspect job|tenant|shards``.

    job TENANT JOB   status, version, required types, parts received and
                     missing per type, events, refusals, deadline, when it
                     closes, and what its proxy still holds for it
    tenant TENANT    the current window's counts
    shards           held events, the oldest one's age and deliveries in
                     flight, per shard

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
    render_job,
    render_shards,
    render_tenant,
    shard_reports,
    tenant_report,
)
from runtime.settings import add_options, from_args


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
