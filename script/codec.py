"""Run the codec server: ``python -m script.codec --port 8081``.

Temporal's UI (``--ui-codec-endpoint``, or the UI's codec server setting)
and CLI (``--codec-endpoint``) send it the project's payloads, msgpack
compressed with Zstandard, and get readable JSON back; what the UI sends to
workflows goes the other way. ``runtime.codec`` has the routes, and
``wire.readable`` the translation. The shared token comes only from the
environment or a file, never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import structlog
from aiohttp import web

from runtime.cli import configure_logging, exit_now
from runtime.codec import TOKEN, CodecServerSettings, create_app
from runtime.settings import add_options, from_args

log = structlog.get_logger("script.codec")


def parse_args(argv: list[str] | None = None) -> CodecServerSettings:
    p = argparse.ArgumentParser(prog="python -m script.codec", description=__doc__)
    add_options(p, CodecServerSettings)
    settings = from_args(CodecServerSettings, p.parse_args(argv), parser=p)
    try:
        settings.shared_token()
    except OSError as exc:
        p.error(f"--token-file: {exc.strerror}: {settings.token_file}")
    return settings


async def main(settings: CodecServerSettings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "codec server started",
        listening=[f"{host}:{port}" for host, port, *_ in runner.addresses],
        cors_origins=list(settings.cors_origins),
        token=app[TOKEN] is not None,
    )
    await stop.wait()
    await runner.cleanup()
    log.info("codec server stopped")


if __name__ == "__main__":
    settings = parse_args()
    configure_logging(settings.log_level)
    asyncio.run(main(settings))
    exit_now(0)
