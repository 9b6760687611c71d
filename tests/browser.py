"""Debian's chromium driven by Playwright, for the UI tests: one page at a URL.

NOTE: chromium comes from apt (`apt-get install chromium`); never `playwright install`.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]


@contextmanager
def chromium_page(url: str, *, width: int, height: int, timeout_s: float) -> Iterator[Page]:
    """A headless chromium page opened at `url`, every wait bounded by `timeout_s`; the test skips
    and says why when chromium is not installed."""
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM}: `apt-get install chromium` to run the browser tests")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_s * 1000)
            page.goto(url)
            yield page
        finally:
            browser.close()
