"""Headless Chromium for the browser tests (a pytest plugin).

Fixtures:
    chromium: the browser's path (``EVENTFLOW_CHROMIUM`` to use another).
    browser_page: a Playwright page in Debian's Chromium (``/usr/bin/chromium``,
        installed by ``make chromium``), in a fresh, empty profile.

Playwright's wheel carries its own driver; given ``executable_path`` it uses
that browser and downloads none. The flags are the ones this kind of machine
needs as root with a closed network: no sandbox, no GPU, and none of
Chromium's background connections (updates, sync, field trials), which would
be refused here and slow every start.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("EVENTFLOW_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; the test fails, saying how to install it, without."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium "
            "(the test target does it too)"
        )
    return CHROMIUM


@pytest.fixture
async def browser_page(chromium: Path, tmp_path: Path) -> AsyncIterator[object]:
    """A page of a headless Chromium with a new, empty profile; closed after
    the test."""
    # Imported here: only the browser tests need Playwright loaded.
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport=VIEWPORT,  # type: ignore[arg-type]
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            yield page
        finally:
            await context.close()
